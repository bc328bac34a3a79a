"""Imports a script of `benchmarks/` by its path: that folder is not an installed package."""
import importlib.util
import pathlib
import types


def load(name: str) -> types.ModuleType:
  """`benchmarks/<name>.py` as a module; its `main` does not run (nor, for scripts that
  define their flags under `__main__`, its flag definitions)."""
  path = pathlib.Path(__file__).parents[1] / "benchmarks" / f"{name}.py"
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module
