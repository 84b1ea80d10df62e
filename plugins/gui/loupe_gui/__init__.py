"""loupe-gui: the Loupe desktop app (PyQt5).

``loupe gui [RECIPE]`` opens it. The app holds no inspection logic of its own:
every form, run, training job and evaluation goes through the host API
(catalogue, ``Recipe``, ``Pipeline``, ``run_recipe``, trainers, runtimes,
optimisers). PyQt5 is imported only when the app starts, so ``loupe`` stays
fast and a production install without the GUI still works.
"""
__version__ = "0.1.0"
