"""Runner: the simulated clock, the notebook executor, its archive and the simulation loop."""

import sys

# nbformat (and so papermill) imports jsonschema, whose format checkers import rfc3987_syntax when it is
# installed (JupyterLab's dependencies install it), and rfc3987_syntax builds some forty Lark parsers at
# import: 1.6 s of every runner process's start-up, for the "iri" format no notebook schema uses
# (python-jsonschema/jsonschema#1428). Marked absent, jsonschema leaves that one format unchecked.
sys.modules.setdefault("rfc3987_syntax", None)
