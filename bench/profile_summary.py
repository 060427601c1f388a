"""Summarise py-spy's collapsed stacks (`bench/ingest.py --profile FILE`).

    .venv/bin/python bench/profile_summary.py FILE [--top 25]

Prints the share of samples per thread, then per thread the functions with the most
samples inclusive (anywhere on the stack) and exclusive (on top of it).
"""

import argparse
import collections
import re


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file")
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args()
    threads: collections.Counter = collections.Counter()
    inclusive: dict = collections.defaultdict(collections.Counter)
    exclusive: dict = collections.defaultdict(collections.Counter)
    with open(args.file) as lines:
        for line in lines:
            stack, _, count = line.rstrip().rpartition(" ")
            if not stack:
                continue
            frames = stack.split(";")
            thread = re.sub(r"\s*\(?0x[0-9a-f]+\)?|\s*\(\d+\)", "", frames[0]).strip()
            n = int(count)
            threads[thread] += n
            for frame in set(frames[1:]):
                inclusive[thread][frame] += n
            if len(frames) > 1:
                exclusive[thread][frames[-1]] += n
    total = sum(threads.values()) or 1
    print(f"{total} samples")
    for thread, n in threads.most_common():
        print(f"\n== {thread}: {n} samples, {100 * n / total:.1f} %")
        print("  inclusive:")
        for frame, m in inclusive[thread].most_common(args.top):
            print(f"    {100 * m / n:5.1f} %  {frame}")
        print("  exclusive:")
        for frame, m in exclusive[thread].most_common(args.top // 2):
            print(f"    {100 * m / n:5.1f} %  {frame}")


if __name__ == "__main__":
    main()
