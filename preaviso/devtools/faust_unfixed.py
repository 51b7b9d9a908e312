"""`python -m preaviso.devtools.faust_unfixed worker`: the worker without our Faust fix.

Only for reproducing the upstream bug (docs/faust-recovery-bug.md) side by side with
the fixed worker: it runs the same CLI with ``faust_fixes.apply`` made a no-op.
"""

from __future__ import annotations

from preaviso.streams import faust_fixes


def main() -> None:
    faust_fixes.revert()
    faust_fixes.apply = lambda: None
    from preaviso.cli import main as cli

    cli()


if __name__ == "__main__":
    main()
