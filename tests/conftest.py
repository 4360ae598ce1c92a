import numpy as np
import pytest
import torch


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
