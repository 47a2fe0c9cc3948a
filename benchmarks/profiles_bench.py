#!/usr/bin/env python3
"""Optimization profiles in the benchmark harness (scenario P; standard library only).

    python benchmarks/profiles_bench.py [--python PATH] [--runs N] [--smoke]
                                        [--json FILE] [--workdir DIR] [--keep]

Builds the same venvs as run.py (its ``Harness.setup``), asks the ``ac`` venv
for ``autocompile optimize --suggest --json``, and times benchmarks/workload.py
three ways, round by round in a rotating order:

* ``stock``: the stock venv with a warm ``__pycache__`` (run.py's S1);
* ``none``: the ac venv, warm cache, no profile (run.py's S3);
* ``suggested``: the ac venv, warm cache of its own, ``AUTOCOMPILE_PROFILES`` set
  to the suggested rules.

Reported: wall time and peak RSS (``ru_maxrss``) medians, and the median over
rounds of suggested/none and suggested/stock. Targets (issue 7): peak RSS at
least 5% below ``none``, wall time no slower than ``none``.
"""

import json
import os
import shlex
import shutil
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (the harness: venvs, timed children, environments)

DEFAULT_JSON = os.path.join(run.HERE, "results", "profiles-latest.json")
SIDES = ("stock", "none", "suggested")


class ProfilesBench(run.Harness):
    def suggest(self):
        env = run.child_env(dont_write=True, cache_dir=os.path.join(self.workdir, "caches", "suggest"), disable=True)
        env["AUTOCOMPILE_CONFIG"] = os.devnull + ".missing"
        proc = run.sh([self.vpy("ac"), "-m", "autocompile", "optimize", "--suggest", "--json"], env,
                      what="autocompile optimize --suggest")
        text = proc.stdout
        document = json.loads(text[text.index("{"):text.rindex("}") + 1])
        self.setup_info["suggest"] = document
        return ";".join("%s=%s" % (s["package"], s["profile"]) for s in document["suggested"])

    def measure(self):
        self.setup()
        if not self.ac_ok:
            raise run.HarnessError("autocompile is not installed in the ac venv")
        run.strip_pycache(self.sp("ac"))
        self.log("asking the ac venv for suggestions")
        rules = self.suggest()
        self.setup_info["profiles"] = rules
        self.log("suggested: %s" % rules)
        caches = {side: run.new_cache_dir(os.path.join(self.workdir, "caches", side)) for side in ("none", "suggested")}
        envs = {"stock": self.env_s1(), "none": self.env_ac(caches["none"]), "suggested": self.env_ac(caches["suggested"])}
        envs["suggested"]["AUTOCOMPILE_PROFILES"] = rules
        venvs = {"stock": "stock", "none": "ac", "suggested": "ac"}
        self.log("prep: warm __pycache__ for stock, fill both caches, one warm-up each")
        for side in SIDES:
            self.run_workload("P", "prep-" + side, 0, venvs[side], envs[side], measured=False)
        for side in SIDES:
            self.run_workload("P", "warmup-" + side, 0, venvs[side], envs[side], measured=False)
        self.check_ac_clean("ac", "after filling the caches")
        self.log("P: %d rounds of %s" % (self.runs, ", ".join(SIDES)))
        for i in range(self.runs):
            order = SIDES[i % 3:] + SIDES[:i % 3]
            if (i // 3) % 2:
                order = tuple(reversed(order))
            for side in order:
                self.run_workload("P", side, i, venvs[side], envs[side])
        self.check_ac_clean("ac", "during P")
        self.setup_info["cache_suggested"] = self.ac_stats(caches["suggested"])
        self.setup_info["cache_none"] = self.ac_stats(caches["none"])

    def report(self):
        series = {side: self.series("P", side) for side in SIDES}
        rss = {side: self.series("P", side, "maxrss_kib") for side in SIDES}
        rounds = sorted(set.intersection(*(set(s) for s in series.values())))
        result = {"rounds": len(rounds), "sides": {}, "ratios": {}}
        for side in SIDES:
            result["sides"][side] = {"wall_s": run.summary([series[side][i] for i in rounds]),
                                     "maxrss_mib": run.summary([rss[side][i] / 1024.0 for i in rounds])}
        for a, b in (("suggested", "none"), ("suggested", "stock"), ("none", "stock")):
            result["ratios"]["%s/%s" % (a, b)] = {
                "wall": statistics.median(series[a][i] / series[b][i] for i in rounds),
                "maxrss": statistics.median(rss[a][i] / rss[b][i] for i in rounds),
                "maxrss_diff_mib": statistics.median((rss[a][i] - rss[b][i]) / 1024.0 for i in rounds),
            }
        mem = result["ratios"]["suggested/none"]["maxrss"]
        wall = result["ratios"]["suggested/none"]["wall"]
        result["targets"] = {"peak RSS <= 0.95 x none": mem <= 0.95, "wall <= 1.00 x none": wall <= 1.0}
        # autocompile's own modules (one more with a profile: _transform) are not the workload's
        counts = {s["modules"] - (s.get("ac_modules") or 0) for s in self.samples if s["scenario"] == "P" and "modules" in s}
        result["module_counts"] = sorted(counts)
        return result

    def print_report(self, result):
        print()
        print("=" * 90)
        print("command:  %s" % shlex.join([sys.executable] + sys.argv))
        print("cpu:      %s (%d cores)" % (run.cpu_model(), os.cpu_count()))
        print("python:   %s" % self.setup_info.get("python", {}).get("sys_version"))
        print("profiles: %s" % self.setup_info.get("profiles"))
        excluded = self.setup_info.get("suggest", {}).get("excluded", [])
        print("left out: %s" % "; ".join("%s (%s)" % (e["package"], e["reason"]) for e in excluded))
        print()
        rows = [("side", "wall median [min-max]", "peak RSS median [min-max]")]
        for side in SIDES:
            s = result["sides"][side]
            rows.append((side, run.fmt_summary(s["wall_s"], "s"), run.fmt_summary(s["maxrss_mib"], "MiB", digits=1)))
        rows.append(("", "", ""))
        rows.append(("ratio (median over rounds)", "wall", "peak RSS (diff)"))
        for name, r in result["ratios"].items():
            rows.append((name, "%.3f" % r["wall"], "%.3f (%+.1f MiB)" % (r["maxrss"], r["maxrss_diff_mib"])))
        widths = [max(len(row[c]) for row in rows) for c in range(3)]
        for row in rows:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        print()
        for target, met in result["targets"].items():
            print("target %s: %s" % (target, "met" if met else "NOT met"))
        print("module counts (less autocompile's own): %s%s" % (result["module_counts"], "" if len(result["module_counts"]) == 1 else " (DIFFER)"))
        if self.anomalies:
            print("anomalies: %s" % "; ".join(self.anomalies))
        print("=" * 90)


def main(argv=None):
    p = run.harness_arguments(__doc__, DEFAULT_JSON, "measured rounds (default 10)",
                              "synthetic workload, 2 rounds: checks the script only")
    args = p.parse_args(argv)
    temp = args.workdir is None
    if temp:
        args.workdir = tempfile.mkdtemp(prefix="acprofiles-", dir="/tmp")
    args.workdir = os.path.abspath(args.workdir)
    bench = ProfilesBench(args)
    bench.t_start = run.time.perf_counter()
    rc, result = 0, None
    try:
        bench.measure()
        result = bench.report()
        bench.print_report(result)
    except run.HarnessError as exc:
        bench.log("ERROR: %s" % exc)
        rc = 1
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"command": shlex.join([sys.executable] + sys.argv), "setup": bench.setup_info, "result": result,
                   "anomalies": bench.anomalies, "samples": bench.samples}, f, indent=1, default=str)
    print("JSON written to %s" % args.json)
    if temp and not args.keep and rc == 0:
        shutil.rmtree(args.workdir, ignore_errors=True)
    elif temp:
        print("work directory kept: %s" % args.workdir)
    return rc


if __name__ == "__main__":
    sys.exit(main())
