"""What one ``bbx bench`` run does: the server, the workload, the schedule, the prompts and
the SLOs, checked before anything is sent."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from blackbox.bench.metrics import SLO_KEYS, parse_pairs
from blackbox.bench.schedule import Schedule
from blackbox.errors import BbxError, did_you_mean

# streamed generation on the OpenAI routes
GENERATION = ("chat", "completion")
# one request = `batch` items, timed end to end
SCORING = ("next-token", "label-logprobs", "score", "hidden-states", "mixture")
WORKLOADS = GENERATION + SCORING
# fluidity targets when neither --fluidity nor --slo names them
DEFAULT_PREFILL_S, DEFAULT_DECODE_S = 1.0, 0.1


@dataclass
class BenchConfig:
    """A benchmark run (see :func:`blackbox.api.bench` for each field)."""

    base_url: str
    workload: str = "chat"
    # the schedule's defaults are the Schedule's own (one home for each)
    mode: str = Schedule.mode
    concurrency: int = Schedule.concurrency
    rate: float | None = Schedule.rate
    seed: int = Schedule.seed
    requests: int = Schedule.requests
    duration: float = Schedule.duration
    max_tokens: int = 128
    temperature: float = 0.0
    task: str = "bbc-news"
    prompt_words: int = 200
    repeat: bool = False
    offset: int = 0
    batch: int = 1
    warmup: int = 0
    slo: str | None = None
    fluidity: str | None = None
    model: str | None = None
    adapter: str | None = None
    mixture_adapters: list[str] | None = None
    api_key_env: str = "OPENAI_API_KEY"
    timeout: float = 120.0
    output_dir: str = "results/runs"
    slo_s: dict[str, float] = field(init=False)
    prefill_s: float = field(init=False)
    decode_s: float = field(init=False)

    def __post_init__(self) -> None:
        if self.workload not in WORKLOADS:
            raise BbxError(f"unknown workload '{self.workload}'"
                           + did_you_mean(self.workload, list(WORKLOADS)))
        self.base_url = self.base_url.rstrip("/")
        if not self.base_url.startswith(("http://", "https://")):
            raise BbxError(f"--base-url {self.base_url!r}: give the server's OpenAI base URL, "
                           "e.g. http://127.0.0.1:8000/v1")
        self.schedule  # noqa: B018 - validates the mode and the bounds now
        # an option the mode would ignore is a mistake worth saying (not a silent sync run)
        if self.mode != "concurrency" and self.concurrency != 1:
            raise BbxError("--concurrency applies with --mode concurrency")
        if self.mode != "rate" and self.rate is not None:
            raise BbxError("--rate applies with --mode rate")
        if self.max_tokens < 1 or self.prompt_words < 1 or self.batch < 1:
            raise BbxError("--max-tokens, --prompt-words and --batch must be >= 1")
        if self.warmup < 0 or self.offset < 0:
            raise BbxError("--warmup and --offset must be >= 0")
        if self.batch > 1 and self.streamed:
            raise BbxError("--batch applies to scoring workloads: a streamed generation "
                           "request holds one prompt")
        self.slo_s = parse_pairs(self.slo, SLO_KEYS, "--slo")
        if not self.streamed and set(self.slo_s) - {"e2e"}:
            raise BbxError(f"--slo: workload {self.workload} streams no tokens: only e2e= "
                           "applies")
        targets = parse_pairs(self.fluidity, ("prefill", "decode"), "--fluidity")
        # the SLOs are the natural deadlines: a token is fluid when it keeps to them
        self.prefill_s = targets.get("prefill", self.slo_s.get("ttft", DEFAULT_PREFILL_S))
        self.decode_s = targets.get("decode", self.slo_s.get("tpot", DEFAULT_DECODE_S))

    @property
    def schedule(self) -> Schedule:
        """The validated schedule."""
        return Schedule(self.mode, self.concurrency, self.rate, self.seed, self.requests,
                        self.duration)

    @property
    def streamed(self) -> bool:
        """Whether the workload streams generated tokens (TTFT, ITL, ... apply)."""
        return self.workload in GENERATION

    def as_recipe(self) -> dict[str, Any]:
        """The run directory's ``recipe.yaml``: every option as given."""
        data = asdict(self)
        for derived in ("slo_s", "prefill_s", "decode_s"):
            data.pop(derived)
        return {"method": "bench", **data}
