"""The MLflow loader of models registered before lstmad.serving existed (their MLmodel files name
``lstmad.pyfunc``): the same loader as lstmad.serving.pyfunc."""

from lstmad.serving.pyfunc import _load_pyfunc  # noqa: F401 (MLflow's pyfunc flavour calls it by this name)
