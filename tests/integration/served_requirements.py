"""Print what `mlflow models serve --env-manager uv` installs for a version registered from this environment:
the served runtime (``register.runtime_requirements``) and the build tools MLflow records beside it.

`make` installs these once into a scratch environment so that uv's cache holds them, and the serving test can
build the model's environment offline (no network at test time)."""

from mlflow.utils.environment import _PythonEnv  # what log_model writes to python_env.yaml (no public API)

from her2pcr.registry.register import runtime_requirements

if __name__ == "__main__":
    print(*runtime_requirements(), *_PythonEnv.get_current_build_dependencies(), sep="\n")
