#!/usr/bin/env python3
"""Summaries of critest's JUnit reports (ginkgo's --ginkgo.junit-report).

    report.py summary RESULTS/junit.xml
        "N passed, N failed, N skipped", then each failed spec with its message.
    report.py compare NAME=RESULTS/junit.xml NAME=RESULTS/junit.xml ...
        The counts side by side, then every spec whose outcome differs.

Suite-level nodes ([BeforeSuite], [AfterSuite], ...) count only when they fail:
a failed BeforeSuite means no spec ran at all.
"""

import sys
import xml.etree.ElementTree as ET

SUITE_NODES = ("[BeforeSuite]", "[AfterSuite]", "[SynchronizedBeforeSuite]",
               "[SynchronizedAfterSuite]", "[ReportBeforeSuite]", "[ReportAfterSuite]")


def outcomes(path):
    """{spec name: (state, message)} for one report, in file order."""
    specs = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        name = case.get("name", "")
        if name.startswith("[It] "):
            name = name[len("[It] "):]
        failure = case.find("failure")
        if failure is None:
            failure = case.find("error")
        if failure is not None:
            state = "failed"
            message = failure.get("message") or ""
            # ginkgo puts the location and the full text in the body; the
            # attribute alone is often just the first line.
            body = (failure.text or "").strip()
            if body and len(body) > len(message):
                message = body
        elif case.find("skipped") is not None:
            # "skipped" alone: filtered out (skip.txt, --focus, benchmarks);
            # "skipped - <why>": critest skipped it itself.
            reason = case.find("skipped").get("message") or ""
            state, message = "skipped", reason.partition(" - ")[2]
        else:
            state, message = "passed", ""
        if name.startswith(SUITE_NODES) and state != "failed":
            continue
        specs[name] = (state, message)
    return specs


def counts(specs):
    c = {"passed": 0, "failed": 0, "skipped": 0}
    for state, _ in specs.values():
        c[state] += 1
    return c


def indent(text, prefix="      "):
    lines = [line.rstrip() for line in text.strip().splitlines()]
    # Keep a failure readable: the message, not ginkgo's full stack.
    if len(lines) > 25:
        lines = lines[:25] + ["[...]"]
    return "\n".join(prefix + line for line in lines)


def summary(path):
    specs = outcomes(path)
    c = counts(specs)
    print(f"{c['passed']} passed, {c['failed']} failed, {c['skipped']} skipped")
    reasons = {}
    for state, message in specs.values():
        if state == "skipped":
            reasons[message] = reasons.get(message, 0) + 1
    for reason, n in sorted(reasons.items(), key=lambda r: (r[0] != "", r[0])):
        print(f"  skipped {n:>3}: {reason or 'not selected (skip.txt, --focus, benchmarks)'}")
    failed = [(n, m) for n, (s, m) in specs.items() if s == "failed"]
    if failed:
        print("\nFailures:")
        for name, message in failed:
            print(f"  - {name}")
            print(indent(message))
    return 1 if failed else 0


def compare(pairs):
    runs = []
    for pair in pairs:
        label, _, path = pair.partition("=")
        runs.append((label, outcomes(path)))
    width = max(len(label) for label, _ in runs)
    for label, specs in runs:
        c = counts(specs)
        print(f"{label:<{width}}  {c['passed']:>4} passed  {c['failed']:>4} failed  {c['skipped']:>4} skipped")
    names = []
    for _, specs in runs:
        names += [n for n in specs if n not in names]
    differ = [n for n in names if len({specs.get(n, ("absent", ""))[0] for _, specs in runs}) > 1]
    if differ:
        print("\nSpecs whose outcome differs:")
        for name in sorted(differ):
            states = ", ".join(f"{label} {specs.get(name, ('absent', ''))[0]}" for label, specs in runs)
            print(f"  - {name}\n      {states}")
    return 0


def main(argv):
    if len(argv) == 3 and argv[1] == "summary":
        return summary(argv[2])
    if len(argv) >= 3 and argv[1] == "compare":
        return compare(argv[2:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
