#!/usr/bin/env python3
"""Run mil_check.check over many packages in one process (coremltools takes
seconds to import, and the lowering suite checks one package per op).

    mil_check_many.py JOBS.json

JOBS.json: [{"package": P, "inputs": IN.npz or null, "outputs": OUT.npz or
null}, ...]. Prints a JSON list of mil_check reports, in job order.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mil_check  # noqa: E402


def _last_op(e):
    """The coremltools op module the exception was raised in."""
    tb = e.__traceback__
    where = "?"
    while tb is not None:
        f = tb.tb_frame
        if "/ops/defs/" in f.f_code.co_filename:
            where = "%s.%s" % (f.f_globals.get("__name__", "?").rsplit(".", 1)[-1], f.f_locals.get("self", None).__class__.__name__)
        tb = tb.tb_next
    return where


def main():
    with open(sys.argv[1]) as f:
        jobs = json.load(f)
    reports = []
    for j in jobs:
        try:
            reports.append(mil_check.check(j["package"], j.get("inputs"), j.get("outputs")))
        except Exception as e:
            # coremltools' numpy evaluation itself can crash (a bug in one
            # op's value inference); validate without it and say so.
            try:
                r = mil_check.check(j["package"])
                r["evaluated"] = False
                r["eval_crash"] = "%s: %s: %s" % (_last_op(e), type(e).__name__, e)
            except Exception as e2:  # one broken package must not hide the others
                r = {"package": j["package"], "valid": False,
                     "errors": ["mil_check crashed: %s: %s" % (type(e2).__name__, e2)]}
            reports.append(r)
    json.dump(reports, sys.stdout)


if __name__ == "__main__":
    main()
