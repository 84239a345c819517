# Session 12, run 72 (debug): which weight components does the rows kernel get wrong? Writes the
# standard model with all weights zero except one kh, kd, kw or input channel, and an input.
import sys
import torch
sys.path.insert(0, "tools")
from export_model import Model

torch.manual_seed(0)
base = Model(3, 16, 4, 4).eval()
x = torch.rand(8, 3, 16, 32, 32)
torch.save(x, "/tmp/dbg_x.pt")
masks = {"all": None, "none": (slice(0, 0),)}
for k in range(4):
    masks[f"kd{k}"] = (slice(None), slice(None), k)
    masks[f"kh{k}"] = (slice(None), slice(None), slice(None), k)
    masks[f"kw{k}"] = (slice(None), slice(None), slice(None), slice(None), k)
for c in range(3):
    masks[f"ci{c}"] = (slice(None), c)
for name, index in masks.items():
    m = Model(3, 16, 4, 4).eval()
    m.load_state_dict(base.state_dict())
    if index is not None:
        with torch.no_grad():
            w = torch.zeros_like(m.conv.weight)
            w[index] = base.conv.weight[index]
            m.conv.weight.copy_(w)
    torch.jit.script(m).save(f"/tmp/dbg_{name}.pt")
print(" ".join(masks))
