#!/usr/bin/env python3
"""The Python face on the GPU: ModelNew against the reference Model (same seed, same parameters),
against float64, under torch.compile(fullgraph=True) and inside CUDA graph capture. Registered with
ctest; without a GPU it exits 77, which ctest reports as skipped."""
import os
import sys
import unittest

import torch

if not torch.cuda.is_available():
    print("no CUDA device: ModelNew tests skipped")
    sys.exit(77)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
from export_model import Model  # noqa: E402
from fused3d_torch import ModelNew  # noqa: E402

# Relative L2 bounds against float64, per mode (the same as the C++ tests, test_support.h).
BOUND = {"accurate": 1e-5, "tf32": 1e-3}
# (in, out, kernel, groups, bias, spatial): the standard layer and the tensor-core path with other
# sizes, and a layer the general kernel runs.
CONFIGS = [(3, 16, 4, 4, True, (16, 32, 32)), (2, 16, 4, 2, False, (9, 20, 24)), (4, 24, 3, 6, True, (8, 12, 14))]


def rel_l2(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm()).item()


def pair(config, precision="accurate", seed=0):
    cin, cout, k, groups, bias, _ = config
    torch.manual_seed(seed)
    ref = Model(cin, cout, k, groups, bias=bias).cuda().eval()
    torch.manual_seed(seed)
    new = ModelNew(cin, cout, k, groups, bias=bias, precision=precision).cuda().eval()
    return ref, new


def random_input(config, batch, generator):
    return torch.rand(batch, config[0], *config[5], generator=generator).cuda()


class ModelNewTest(unittest.TestCase):
    def test_same_parameters_as_the_reference_after_the_same_seed(self):
        for config in CONFIGS:
            ref, new = pair(config)
            self.assertEqual(list(ref.state_dict()), list(new.state_dict()))
            for name, value in ref.state_dict().items():
                self.assertTrue(torch.equal(value, new.state_dict()[name]), name)
            new.load_state_dict(ref.state_dict())  # and the reference's weights load as they are

    def test_matches_reference_and_float64_on_fresh_inputs(self):
        gen = torch.Generator().manual_seed(1)
        for config in CONFIGS:
            for precision in ("accurate", "tf32"):
                ref, new = pair(config, precision)
                with torch.no_grad():
                    # Random affine so the GroupNorm weight and bias are exercised.
                    for m in (ref, new):
                        torch.manual_seed(2)
                        m.group_norm.weight.uniform_(0.5, 1.5)
                        m.group_norm.bias.uniform_(-0.5, 0.5)
                    ref64 = Model(config[0], config[1], config[2], config[3], bias=config[4]).cuda().double()
                    ref64.load_state_dict(ref.state_dict())
                    for _ in range(5):
                        x = random_input(config, 8, gen)
                        out = torch.full((8, config[1]), float("nan"), device="cuda")
                        out.copy_(new(x))
                        self.assertTrue(torch.isfinite(out).all())
                        torch.testing.assert_close(out, ref(x), atol=1e-2, rtol=1e-2)
                        self.assertLessEqual(rel_l2(out, ref64(x.double())), BOUND[precision], (config, precision))

    def test_conv_settings_and_reduced_precision(self):
        """Stride, padding, dilation and conv groups as Conv3d takes them; .half() / .bfloat16()
        models return their dtype, within one output rounding of float64 on the same values."""
        settings = dict(stride=(2, 1, 3), padding=(1, 0, 2), dilation=(1, 2, 1), conv_groups=2)
        torch.manual_seed(4)
        new = ModelNew(4, 6, (3, 2, 3), 3, **settings).cuda().eval()
        ref64 = Model(4, 6, (3, 2, 3), 3, stride=settings["stride"], padding=settings["padding"],
                      dilation=settings["dilation"], conv_groups=2).cuda().double().eval()
        ref64.load_state_dict(new.state_dict())
        gen = torch.Generator().manual_seed(5)
        x = torch.rand(3, 4, 7, 8, 10, generator=gen).cuda()
        with torch.no_grad():
            self.assertLessEqual(rel_l2(new(x), ref64(x.double())), BOUND["accurate"])
            for dtype, rounding in ((torch.float16, 2.0 ** -11), (torch.bfloat16, 2.0 ** -8)):
                low = ModelNew(4, 6, (3, 2, 3), 3, **settings).cuda().eval()
                low.load_state_dict(new.state_dict())
                low = low.to(dtype)
                ref64.load_state_dict({k: v.to(dtype).double() for k, v in new.state_dict().items()})
                out = low(x.to(dtype))
                self.assertEqual(out.dtype, dtype)
                self.assertLessEqual(rel_l2(out, ref64(x.to(dtype).double())), BOUND["accurate"] + rounding, dtype)

    def test_torch_compile_fullgraph(self):
        config = CONFIGS[0]
        _, new = pair(config)
        compiled = torch.compile(new, fullgraph=True)  # raises on a graph break
        x = random_input(config, 16, torch.Generator().manual_seed(3))
        with torch.no_grad():
            self.assertTrue(torch.equal(compiled(x), new(x)))

    def test_cuda_graph_capture_and_replay(self):
        config = CONFIGS[0]
        _, new = pair(config)
        gen = torch.Generator().manual_seed(4)
        static_x = random_input(config, 16, gen)
        with torch.no_grad():
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):  # warm-up outside the capture (weight packing, allocations)
                    new(static_x)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = new(static_x)
            fresh = random_input(config, 16, gen)
            static_x.copy_(fresh)
            graph.replay()
            torch.cuda.synchronize()
            self.assertTrue(torch.equal(static_out, new(fresh)))

    def test_bitwise_deterministic(self):
        config = CONFIGS[0]
        _, new = pair(config)
        x = random_input(config, 32, torch.Generator().manual_seed(5))
        with torch.no_grad():
            first = new(x)
            for _ in range(10):
                self.assertTrue(torch.equal(new(x), first))


if __name__ == "__main__":
    unittest.main(verbosity=2)
