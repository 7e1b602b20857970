"""The allocator setting: a backbone forward reuses the last forward's memory instead of faulting it in again."""

import subprocess
import sys

import pytest

from eagle_cli import allocator

pytestmark = pytest.mark.skipif(not allocator.tune(), reason="glibc only")

# In a fresh process, so that glibc starts from its own thresholds. Random weights: memory does not care.
_FAULTS = """
import resource
import torch, torchvision
from eagle_cli import allocator

torch.set_num_threads(1)
model = torchvision.models.mobilenet_v2().features[:14].eval()
tiles = torch.randn(8, 3, 224, 224)

def faults_per_forward():
    with torch.inference_mode():
        model(tiles)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(3):
            model(tiles)
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 3

default = faults_per_forward()
assert allocator.tune()
print(default, faults_per_forward())
"""


def test_a_forward_reuses_the_last_forwards_memory_instead_of_faulting_it_in_again():
    out = subprocess.run([sys.executable, "-c", _FAULTS], capture_output=True, text=True, check=True)
    default, tuned = (float(x) for x in out.stdout.split())
    assert default > 10_000  # glibc's defaults: the activations' pages are mapped, and zeroed, on every forward
    assert tuned < default / 10


def test_building_a_feature_extractor_sets_the_allocator_up():
    build = ("import torch; from eagle_cli import allocator; from eagle_cli.expert.features import Geometry, "
             "PatchFeatureExtractor; PatchFeatureExtractor('mobilenet_v2', weights='none', geometry=Geometry(64, 0), "
             "device=torch.device('cpu')); print(allocator._tuned)")
    out = subprocess.run([sys.executable, "-c", build], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
