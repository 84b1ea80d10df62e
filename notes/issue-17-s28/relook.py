"""relook.py BUNDLE OUT LO HI [DOUBT]: a copy of a detection bundle with ``verifier.second_look`` {looks: 8, band: [LO, HI]}
(and doubt: DOUBT when given; session 29)
(the same graphs; ``write_bundle`` re-pins the manifest), so ``loupe eval`` runs the runtime's second look on a
bundle trained before it existed (issue 17, session 28)."""
import sys

from host import Bundle, write_bundle

b = Bundle.load(sys.argv[1])
meta = dict(b.meta)
look = {"looks": 8, "band": [float(sys.argv[3]), float(sys.argv[4])]}
if len(sys.argv) > 5:
    look["doubt"] = float(sys.argv[5])
meta["verifier"] = {**meta["verifier"], "second_look": look}
write_bundle(sys.argv[2], meta, {n: b.path / n for n in b.files if n not in ("bundle.json", "manifest.json")})
print(sys.argv[2], meta["verifier"]["second_look"])
