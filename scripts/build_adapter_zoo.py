"""Build the adapter zoo `bbx merge` searches over (LoRA r=8 on SmolLM2, CPU, minutes each).

    flock /tmp/bbx-heavy.lock env OMP_WAIT_POLICY=PASSIVE \
        .venv/bin/python scripts/build_adapter_zoo.py [--steps 150] [--out DIR] [--only NAME ...]

Idempotent: adapters already in the folder are skipped. See blackbox/methods/merge/zoo.py
for which source tasks are in the zoo and which targets are held out.
"""

from __future__ import annotations

import argparse
import json

from blackbox.methods.merge.zoo import TrainConfig, build_zoo


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="zoo folder (default: <cache>/zoo/<model>)")
    ap.add_argument("--model", default="default")
    ap.add_argument("--steps", type=int, default=TrainConfig.steps)
    ap.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    ap.add_argument("--lr", type=float, default=TrainConfig.lr)
    ap.add_argument("--seed", type=int, default=TrainConfig.seed)
    ap.add_argument("--only", nargs="*", default=None, help="build only these adapters")
    args = ap.parse_args()
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    out = build_zoo(args.out, model=args.model, cfg=cfg, only=args.only)
    print(json.dumps({"folder": out["folder"],
                      "adapters": {k: {"final_loss": round(v["final_loss"], 3),
                                       "seconds": v["seconds"]}
                                   for k, v in out["adapters"].items()}}, indent=2))


if __name__ == "__main__":
    main()
