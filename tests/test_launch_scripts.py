"""Launch scripts: syntax, and the commands they would run (gcloud and srun are stubbed)."""

import os
import stat
import subprocess

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ("launch/tpu_pod.sh", "launch/slurm_multinode_gpu.sbatch",
           "launch/single_machine_multi_gpu.sh")


def write_stub(directory, name: str, body: str) -> None:
  """An executable `name` in `directory` that logs its arguments, one call per line.

  Newlines inside arguments (multi-line remote commands) are logged as spaces.
  """
  path = directory / name
  log_call = f'args="$*"; echo "{name} ${{args//$\'\\n\'/ }}" >> "$STUB_LOG"'
  path.write_text(f"#!/usr/bin/env bash\n{log_call}\n{body}\n")
  path.chmod(path.stat().st_mode | stat.S_IEXEC)


def run_script(script, args, tmp_path, **env):
  stub_log = tmp_path / "calls.log"
  stub_log.touch()
  full_env = dict(os.environ, STUB_LOG=str(stub_log),
                  PATH=f"{tmp_path}{os.pathsep}{os.environ['PATH']}", **env)
  result = subprocess.run(["bash", script, *args], cwd=REPO_ROOT, env=full_env,
                          capture_output=True, text=True, timeout=60)
  return result, stub_log.read_text().splitlines()


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_parses_and_runs_moog_main_with_the_distributed_switch(script):
  subprocess.run(["bash", "-n", script], cwd=REPO_ROOT, check=True)
  text = open(os.path.join(REPO_ROOT, script)).read()
  assert "moog.main" in text
  assert "VIDEOLIB_DISTRIBUTED" in text
  assert text.startswith("#!/usr/bin/env bash\n")


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_without_arguments_prints_its_usage(script):
  result = subprocess.run(["bash", script], cwd=REPO_ROOT, capture_output=True, text=True)
  assert result.returncode == 2
  assert "Usage:" in result.stderr and "Example" in result.stderr


def test_single_machine_runs_one_process_without_a_coordinator(tmp_path):
  write_stub(tmp_path, "fake_python", 'echo "VIDEOLIB_DISTRIBUTED=$VIDEOLIB_DISTRIBUTED"')
  result, calls = run_script("launch/single_machine_multi_gpu.sh",
                             ["/runs/a", "--config.batch_size=16"], tmp_path,
                             PYTHON="fake_python", VIDEOLIB_DISTRIBUTED="1")
  assert result.returncode == 0, result.stderr
  assert calls == ["fake_python -m moog.main --config=configs/moog_tiny.py --workdir=/runs/a "
                   "--config.batch_size=16"]
  assert result.stdout.strip() == "VIDEOLIB_DISTRIBUTED=0"


def test_slurm_starts_one_task_per_gpu_with_distributed_on(tmp_path):
  write_stub(tmp_path, "srun", 'echo "VIDEOLIB_DISTRIBUTED=$VIDEOLIB_DISTRIBUTED"')
  result, calls = run_script(
      "launch/slurm_multinode_gpu.sbatch",
      ["/shared/run", "--config=configs/moog_movi.py"], tmp_path,
      SLURM_SUBMIT_DIR=REPO_ROOT, SLURM_GPUS_ON_NODE="4", SLURM_NNODES="2",
      SLURM_JOB_NODELIST="node[1-2]")
  assert result.returncode == 0, result.stderr
  assert calls == ["srun --ntasks-per-node=4 --kill-on-bad-exit=1 python -m moog.main "
                   "--workdir=/shared/run --config=configs/moog_movi.py"]
  assert result.stdout.strip() == "VIDEOLIB_DISTRIBUTED=1"


def test_tpu_pod_creates_installs_and_runs_on_all_workers(tmp_path):
  # `describe` fails: the slice does not exist yet and must be created.
  write_stub(tmp_path, "gcloud", '[[ "$4" == describe ]] && exit 1; exit 0')
  result, calls = run_script(
      "launch/tpu_pod.sh",
      ["moog-pod", "us-east5-a", "v5p-32", "/mnt/gcs/run", "--config.seed=3"], tmp_path)
  assert result.returncode == 0, result.stderr
  verbs = [call.split()[4] for call in calls]
  assert verbs == ["describe", "create", "scp", "ssh", "ssh"]
  assert "--accelerator-type=v5p-32" in calls[1]
  assert all("--zone=us-east5-a" in call for call in calls)
  assert all("--worker=all" in call for call in calls[2:])
  assert "pip install -q -c constraints.txt -e . 'jax[tpu]==0.10.2'" in calls[3]
  assert calls[4].endswith(
      "cd ~/offgrid_video && VIDEOLIB_DISTRIBUTED=1 ~/venv/bin/python -m moog.main "
      "--config=configs/moog_tiny.py --workdir=/mnt/gcs/run --config.seed=3 "
      "--zone=us-east5-a")
