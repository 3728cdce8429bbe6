"""Write synthetic STATS19 files in DfT's raw format (see lib/data/synth.py), labelled synthetic.

Examples:
  python scripts/make_synthetic.py --years 2019-2024 --collisions-per-year 20000 --out data/synthetic
  python scripts/make_synthetic.py --years 2016-2025 --combined --out /tmp/combined
  python scripts/make_synthetic.py --years 2024 --shift 2024-03-01:2024-03-31 --shift-fraction 0.8

Point STATS19_BASE_URL at the printed file:// URL to ingest them.
"""

from __future__ import annotations

import argparse
import logging
from datetime import date
from pathlib import Path

from lib.config import DATA_DIR, ConfigError, parse_years
from lib.data.synth import ERAS, Shift, generate, write_files


def shift_window(text: str) -> tuple[date, date]:
    try:
        start, end = (date.fromisoformat(part) for part in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a window like 2024-03-01:2024-03-31") from None
    return start, end


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--years", default="2019-2024", help="a range like 2019-2024 or a list like 2016,2018")
    parser.add_argument("--collisions-per-year", type=int, default=20_000)
    parser.add_argument("--era", choices=ERAS, default="2024",
                        help="2024: collision_* files of the 2024 specification; accident: the older accident_* files")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DATA_DIR / "synthetic" / "road-accidents-safety-data")
    parser.add_argument("--combined", action="store_true",
                        help="one ...-1979-latest-published-year.csv per table holding every year")
    parser.add_argument("--shift", type=shift_window, metavar="START:END",
                        help="date window where collisions move to rural 60 mph roads at night")
    parser.add_argument("--shift-fraction", type=float, default=0.8, help="share of the window's collisions moved")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        years = parse_years(args.years, "--years")
        shift = Shift(*args.shift, fraction=args.shift_fraction) if args.shift else None
        tables = generate(years, args.collisions_per_year, seed=args.seed, shift=shift)
        write_files(tables, args.out, era=args.era, combined=args.combined)
    except (ConfigError, ValueError) as error:
        parser.error(str(error))
    print(f"STATS19_BASE_URL={args.out.resolve().as_uri()}/")


if __name__ == "__main__":
    main()
