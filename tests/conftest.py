import os

# Two pytest workers share two cores: one thread each. More threads than free cores make
# PyTorch's CPU kernels spin-wait and run many times slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


def _devices():
    devs = ["cpu"]
    if torch.cuda.is_available():
        devs.append("cuda")
    return devs


@pytest.fixture(params=_devices())
def device(request):
    return torch.device(request.param)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """A small synthetic WoodScape-format tree (6 frames of the four-camera rig at 96 × 72)."""
    from heal_swin.data import synthetic

    root = tmp_path_factory.mktemp("data")
    synthetic.generate(root, frames=6, seed=2, size=(96, 72), progress=False, workers=1)
    return root


@pytest.fixture
def run_env(tmp_path, monkeypatch):
    """A training run's environment: its own map cache, one process (no torchrun variables)."""
    monkeypatch.setenv("HEAL_SWIN_CACHE", str(tmp_path / "cache"))
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def float64():
    """float64 as the default dtype for one test (exactness checks), restored after it."""
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(dtype)
