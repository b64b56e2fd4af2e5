"""``bbx bench``: a load generator for any OpenAI-compatible server (bbx serve, llama.cpp,
vLLM).

* :mod:`~blackbox.bench.schedule` -- when requests go out: one at a time, N clients in a
  closed loop, or seeded Poisson arrivals (open loop);
* :mod:`~blackbox.bench.metrics` -- what one request's timings mean (TTFT, ITL, TPOT,
  end-to-end, fluidity-index) and the run's percentiles, rates and goodput;
* :mod:`~blackbox.bench.workloads` -- the prompts and the request each workload sends;
* :mod:`~blackbox.bench.runner` -- the asyncio driver and the run directory.

:func:`blackbox.api.bench` is the entry point.
"""

from blackbox.bench.config import WORKLOADS, BenchConfig

__all__ = ["WORKLOADS", "BenchConfig"]
