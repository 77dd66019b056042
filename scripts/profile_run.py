"""Where the time of a `gdrelu run` goes: compilation, each batch, the general-path redos.

    PYTHONPATH=. python scripts/profile_run.py [--json P] -- run --widths 16,2048 --quiet ...

Runs `gdrelu` with the arguments after `--` and prints, after it:
- the XLA compilation time, summed over the programs compiled (and their count), from
  JAX's monitoring events (programs loaded from the compilation cache count as loads);
- per batch (`runner._train_batch`): its width bucket, runs, checks and seconds;
- the seconds spent redoing on the general path the runs that left a fast path
  (`engine.chunk._redo`, which waits for its results), and how many runs that was;
- the chunks per path (`engine.chunk.run_chunk`) and the redos' gathers and puts of lanes,
  each call timed to its results (`jax.block_until_ready`, which the engine does not
  wait for there, so these calls lose their overlap with the host).
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the profile as JSON to this path")
    args = parser.parse_args(argv[:split])
    import jax.monitoring

    from gdrelu import cli, runner
    from gdrelu.engine import chunk

    events = collections.defaultdict(lambda: [0, 0.0])

    def on_duration(name, seconds, **_):
        events[name][0] += 1
        events[name][1] += seconds

    jax.monitoring.register_event_duration_secs_listener(on_duration)
    batches, redo = [], {"calls": 0, "runs": 0, "seconds": 0.0}
    train_batch, do_redo = runner._train_batch, chunk._redo

    def timed_batch(work, *, bucket, on_check, **settings):
        checks = [0]

        def counted(widths, k, status):
            checks[0] = k
            if on_check is not None:
                on_check(widths, k, status)

        start = time.perf_counter()
        out = train_batch(work, bucket=bucket, on_check=counted, **settings)
        runs = int(sum(idx.size for _, idx in work))
        batches.append(
            {
                "bucket": bucket,
                "runs": runs,
                "checks": checks[0],
                "seconds": time.perf_counter() - start,
            }
        )
        print(
            f"[profile] bucket {bucket}: {runs} runs, {checks[0]} checks, "
            f"{batches[-1]['seconds']:.2f} s",
            file=sys.stderr,
            flush=True,
        )
        return out

    def timed_redo(lanes, *rest):
        start = time.perf_counter()
        out = do_redo(lanes, *rest)
        redo["calls"] += 1
        redo["runs"] += int(lanes.size)
        redo["seconds"] += time.perf_counter() - start
        return out

    calls = collections.defaultdict(lambda: [0, 0.0])

    def waited(name, fn):
        def call(*args, **kwargs):
            begin = time.perf_counter()
            out = jax.block_until_ready(fn(*args, **kwargs))
            key = name if name else f"chunk on the {kwargs['settings'].path} path"
            calls[key][0] += 1
            calls[key][1] += time.perf_counter() - begin
            return out

        return call

    runner._train_batch, chunk._redo = timed_batch, timed_redo
    chunk.run_chunk = waited(None, chunk.run_chunk)
    chunk.own_lanes_at = waited("redo: lanes gathered", chunk.own_lanes_at)
    chunk.put_own_lanes = waited("redo: lanes put back", chunk.put_own_lanes)
    start = time.perf_counter()
    code = cli.main(argv[split + 1 :])
    total = time.perf_counter() - start
    compiles = {k: v for k, v in events.items() if "compile" in k or "cache" in k}
    print(f"\n[profile] total {total:.1f} s (exit code {code})")
    for name, (count, seconds) in sorted(compiles.items(), key=lambda kv: -kv[1][1]):
        print(f"[profile] {name}: {count} events, {seconds:.1f} s")
    print(
        f"[profile] general-path redos: {redo['runs']} runs in {redo['calls']} calls, "
        f"{redo['seconds']:.1f} s"
    )
    for name, (count, seconds) in sorted(calls.items()):
        print(
            f"[profile] {name}: {count} calls, {seconds:.2f} s, {1e3 * seconds / count:.1f} ms each"
        )
    if args.json:
        with open(args.json, "w") as f:
            profile = {"total_s": total, "events": events, "batches": batches, "redo": redo}
            json.dump({**profile, "calls": calls}, f, indent=2)
    return code


if __name__ == "__main__":
    sys.exit(main())
