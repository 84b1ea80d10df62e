"""relook.py BUNDLE OUT LO HI: a copy of a detection bundle with ``verifier.second_look`` {looks: 8, band: [LO, HI]}
(the same graphs; ``write_bundle`` re-pins the manifest), so ``loupe eval`` runs the runtime's second look on a
bundle trained before it existed (issue 17, session 28)."""
import sys

from host import Bundle, write_bundle

b = Bundle.load(sys.argv[1])
meta = dict(b.meta)
meta["verifier"] = {**meta["verifier"], "second_look": {"looks": 8, "band": [float(sys.argv[3]), float(sys.argv[4])]}}
write_bundle(sys.argv[2], meta, {n: b.path / n for n in b.files if n not in ("bundle.json", "manifest.json")})
print(sys.argv[2], meta["verifier"]["second_look"])
