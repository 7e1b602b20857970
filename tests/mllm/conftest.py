import pytest

from tests.mllm.tiny import build_qwen25_vl


@pytest.fixture(scope="session")
def tiny_qwen(tmp_path_factory):
    """A tiny Qwen2.5-VL folder, built once and loaded through from_pretrained like a downloaded one."""
    return build_qwen25_vl(tmp_path_factory.mktemp("tiny-qwen25-vl"))


@pytest.fixture(scope="session")
def qwen_backend(tiny_qwen):
    from eagle_cli.mllm.hf import HFBackend

    return HFBackend(str(tiny_qwen), device="cpu", max_new_tokens=6)
