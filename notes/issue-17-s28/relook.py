"""relook.py BUNDLE OUT LO HI [DOUBT [SHIFT]]: a copy of a detection bundle with ``verifier.second_look`` {looks: 8,
band: [LO, HI]} (and doubt: DOUBT, shift: SHIFT when given; session 29)
(the same graphs; ``write_bundle`` re-pins the manifest), so ``loupe eval`` runs the runtime's second look on a
bundle trained before it existed (issue 17, session 28)."""
import sys

from host import Bundle, write_bundle

b = Bundle.load(sys.argv[1])
meta = dict(b.meta)
look = {"looks": 8, "band": [float(sys.argv[3]), float(sys.argv[4])]}
for key, arg in zip(("doubt", "shift"), sys.argv[5:]):
    look[key] = float(arg)
meta["verifier"] = {**meta["verifier"], "second_look": look}
write_bundle(sys.argv[2], meta, {n: b.path / n for n in b.files if n not in ("bundle.json", "manifest.json")})
print(sys.argv[2], meta["verifier"]["second_look"])
