"""A device or precision that cannot be used is one line naming the key and what to set."""
import pytest
import torch

from partaware.devices import DeviceError, autocast_dtype, resolve_device


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_cuda_without_a_gpu_says_to_use_auto(name):
    with pytest.raises(DeviceError, match=f"device: {name} was asked for but no CUDA GPU is visible; use device: auto"):
        resolve_device(name)


def test_unknown_device_and_precision_name_the_choices():
    with pytest.raises(DeviceError, match="device: 'gpu' is not a device; use auto, cpu, cuda or cuda:N"):
        resolve_device("gpu")
    with pytest.raises(DeviceError, match="extract.precision: 'fp8' is not a precision"):
        autocast_dtype("fp8", torch.device("cpu"))
    assert issubclass(DeviceError, ValueError)  # the CLI prints it as one line, no traceback


def test_auto_and_cpu():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert autocast_dtype("auto", torch.device("cpu")) is None
