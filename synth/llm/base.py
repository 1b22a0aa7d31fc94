"""The engine contract shared by every backend (vLLM, OpenAI-compatible, transformers).

Stages build ``Request`` objects (``synth.llm.request``) and get ``Result`` objects back in the same order, from
``generate`` (a batch) or ``stream`` (a bounded window kept full, ``synth.llm.stream``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar

from synth.errors import SynthError
from synth.llm.precision import CPU_DEFAULT, canonical_dtype, model_dtype
from synth.llm.request import Request, Result
from synth.llm.stream import Feed, stream

if TYPE_CHECKING:
    from synth.devices import Gpu


class EngineOptionError(SynthError, ValueError):
    """An engine option the engine does not take, or cannot honour here; the message names it (never its
    value) and what to do instead."""


class Engine(ABC):
    """A backend. ``model_key`` names the model and its revision for the cache and the fingerprints.

    An engine class also declares what it needs, so that nobody else compares engine names: whether it is
    ``remote`` (its answers come from a server: no local weights, no device), how many GPUs one copy takes
    (``devices_per_copy``, from its options), and its dtype rule (``resolve_dtype``). Executors place copies,
    stages name outputs (``facts``) and precision is resolved by asking the class. A new engine is one module
    and one line in ``synth.llm.factory.ENGINES``."""

    name: str = "engine"
    model_key: str = ""
    dtype: str = "unknown"  # the precision it really runs, resolved before naming (synth.llm.precision)
    remote: ClassVar[bool] = False

    # How many requests the engine works on at once; ``stream`` keeps a few times this many at it.
    concurrency: int = 64

    @classmethod
    def devices_per_copy(cls, options: dict[str, Any]) -> int:
        """GPUs one copy takes where the machine has them (0: it never uses one); a copy of one device runs on
        the CPU where there is none."""
        return 0 if cls.remote else 1

    @classmethod
    def resolve_dtype(cls, model_path: str | None, dtype: str | None, gpus: list[Gpu]) -> str:
        """The precision this engine runs ``model_path`` in on a copy that sees ``gpus`` (none: the CPU). The
        common rule (synth.llm.precision): an explicit dtype wins; float32 on a CPU; the checkpoint's own on a
        GPU. Engines with another rule override it."""
        asked = canonical_dtype(dtype)
        if asked != "auto":
            return asked
        return model_dtype(model_path) if gpus else CPU_DEFAULT

    @classmethod
    def facts(cls, model_path: str | None, options: dict[str, Any], gpus: list[Gpu]) -> dict[str, Any]:
        """What names this engine's answers on a copy that sees ``gpus``, besides the model and the options the
        caller gives (``output_options``): the dtype, and whatever the environment of that copy adds."""
        return {"dtype": cls.resolve_dtype(model_path, options.get("dtype"), gpus)}

    def causal_lm(self) -> tuple[Any, Any] | None:
        """The loaded transformers model and tokenizer, for work that needs logits (eval's log-likelihoods);
        None for engines that hold none."""
        return None

    @abstractmethod
    def generate(self, requests: list[Request]) -> list[Result]:
        """Results in the order of ``requests``; never raises for one bad request."""

    def feed(self) -> Feed:
        """The continuous face ``stream`` drives; engines that can queue requests one by one override it."""
        return WaveFeed(self)

    def stream(self, requests: Iterable[Request], window: int | None = None) -> Iterator[Result]:
        """Results in the order of ``requests`` (read lazily), at most ``window`` (default: 4 × ``concurrency``)
        at the engine at once, refilled as answers come back (``synth.llm.stream``)."""
        return stream(self.feed, requests, window)

    def close(self) -> None:  # noqa: B027 (optional to override: most engines have something to free)
        """Free the model or the connection pool."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class WaveFeed:
    """The feed of an engine that only has ``generate``: a poll generates everything submitted since the last."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.window = 4 * engine.concurrency
        self.queued: list[tuple[int, Request]] = []

    def submit(self, items: list[tuple[int, Request]]) -> list[tuple[int, Result]]:
        self.queued.extend(items)
        return []

    def poll(self, timeout: float) -> list[tuple[int, Result]]:
        items, self.queued = self.queued, []
        if not items:
            return []
        results = self.engine.generate([r for _, r in items])
        return [(tag, res) for (tag, _), res in zip(items, results, strict=True)]
