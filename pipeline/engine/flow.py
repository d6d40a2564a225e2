"""Optical flow between frames, the reliability mask of Ruder et al. (2016), and warping.

Pure core: tensors in, tensors out. Flow comes from OpenCV's DIS (dense inverse search) on
grey 8-bit frames, the one step that leaves torch; warping is `grid_sample` on the device of
its inputs. A flow (1, 2, H, W) holds (dx, dy) in pixels: `flow(a, b)` maps each pixel x of a
to x + flow(x) in b, so `warp(b, flow(a, b))` looks like a.

Convention for frame t of a clip: the *backward* flow b_t = flow(frame_t, frame_{t-1}) pulls
the previous result onto frame t (`warp(out_{t-1}, b_t)`); the *forward* flow
f_t = flow(frame_{t-1}, frame_t) is only needed for the consistency check.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

# Ruder et al. 2016, section 3.1: a pixel is disoccluded where forward and backward flow
# disagree by more than this fraction of their magnitudes (plus a constant, in px²), and on a
# motion boundary where the backward flow's gradient is large relative to its magnitude.
DISOCCLUSION_REL, DISOCCLUSION_ABS = 0.01, 0.5
BOUNDARY_REL, BOUNDARY_ABS = 0.01, 0.002
FLOW_VERSION = "dis-medium-1"   # bump when the flow or the mask changes (keys the flow cache)


def _grey_u8(image: torch.Tensor):
    """(1, 3, H, W) RGB, float in [0, 1] or uint8 -> (H, W) uint8 numpy, ITU-R 601 luma (as OpenCV expects)."""
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float32, device=image.device)
    rgb = image[0].float().div(255) if image.dtype == torch.uint8 else image[0].float()
    grey = (rgb * weights.view(3, 1, 1)).sum(0)
    return grey.clamp(0, 1).mul(255).round().to(torch.uint8).cpu().numpy()


def dis_flow(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Dense flow from frame a to frame b, both (1, 3, H, W) in [0, 1] -> (1, 2, H, W) on a's device.

    DIS at its MEDIUM preset, with variational refinement: accurate enough for warping at a few
    milliseconds per frame pair at 512 px on one CPU core.
    """
    import cv2

    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    flow = dis.calc(_grey_u8(a), _grey_u8(b), None)                 # (H, W, 2) float32
    return torch.from_numpy(flow).permute(2, 0, 1).unsqueeze(0).to(a.device)


def clip_flows(frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward and backward flow of every consecutive pair of frames (N, 3, H, W), float or uint8.

    Returns (forward, backward), each (N-1, 2, H, W): forward[k] = flow(frame_k, frame_k+1),
    backward[k] = flow(frame_k+1, frame_k)."""
    forward = [dis_flow(frames[k:k + 1], frames[k + 1:k + 2]) for k in range(len(frames) - 1)]
    backward = [dis_flow(frames[k + 1:k + 2], frames[k:k + 1]) for k in range(len(frames) - 1)]
    return torch.cat(forward), torch.cat(backward)


def _grid(flow: torch.Tensor) -> torch.Tensor:
    """Sampling grid (B, H, W, 2) in grid_sample's [-1, 1] coordinates for x + flow(x)."""
    _, _, h, w = flow.shape
    ys = torch.arange(h, dtype=torch.float32, device=flow.device).view(1, h, 1).expand(1, h, w)
    xs = torch.arange(w, dtype=torch.float32, device=flow.device).view(1, 1, w).expand(1, h, w)
    x = xs + flow[:, 0].float()
    y = ys + flow[:, 1].float()
    # align_corners=True: -1 and 1 are the centres of the first and last pixels.
    return torch.stack([2 * x / max(w - 1, 1) - 1, 2 * y / max(h - 1, 1) - 1], dim=-1)


def warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """image (B, C, H, W) sampled at x + flow(x) (bilinear; outside the frame: the nearest edge)."""
    return F.grid_sample(image.float(), _grid(flow), mode="bilinear", padding_mode="border",
                         align_corners=True)


def inside(flow: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) 1 where x + flow(x) lands inside the frame, else 0 (content that entered)."""
    _, _, h, w = flow.shape
    ys = torch.arange(h, dtype=torch.float32, device=flow.device).view(1, h, 1)
    xs = torch.arange(w, dtype=torch.float32, device=flow.device).view(1, 1, w)
    x, y = xs + flow[:, 0].float(), ys + flow[:, 1].float()
    ok = (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)
    return ok.unsqueeze(1).float()


def reliability(forward: torch.Tensor, backward: torch.Tensor) -> torch.Tensor:
    """Ruder et al.'s weights c ∈ {0, 1}, (B, 1, H, W) on frame t's pixels.

    `forward` = flow(t-1, t), `backward` = flow(t, t-1). A pixel gets 0 when it was not visible
    in frame t-1: disoccluded (forward and backward flow disagree), on a motion boundary
    (the flow changes sharply there, so warping smears it), or pulled from outside the frame.
    """
    b = backward.float()
    f_at = warp(forward, b)                     # forward flow of the point b leads to
    disagree = (f_at + b).pow(2).sum(1, keepdim=True)
    scale = f_at.pow(2).sum(1, keepdim=True) + b.pow(2).sum(1, keepdim=True)
    disoccluded = disagree > DISOCCLUSION_REL * scale + DISOCCLUSION_ABS
    # Central differences of each flow component; the border copies its neighbour.
    padded = F.pad(b, (1, 1, 1, 1), mode="replicate")
    dx = (padded[..., 1:-1, 2:] - padded[..., 1:-1, :-2]) / 2
    dy = (padded[..., 2:, 1:-1] - padded[..., :-2, 1:-1]) / 2
    gradient = (dx.pow(2) + dy.pow(2)).sum(1, keepdim=True)
    boundary = gradient > BOUNDARY_REL * b.pow(2).sum(1, keepdim=True) + BOUNDARY_ABS
    return (~disoccluded & ~boundary).float() * inside(b)


def warm_start(previous: torch.Tensor, content: torch.Tensor, backward: torch.Tensor,
               mask: torch.Tensor) -> torch.Tensor:
    """Frame t's starting image: the previous result warped onto frame t where that is reliable,
    the content frame where it is not (Ruder et al. fill disoccluded regions the same way)."""
    warped = warp(previous, backward)
    return mask * warped + (1 - mask) * content.float()


def temporal_error(current: torch.Tensor, previous: torch.Tensor, backward: torch.Tensor,
                   mask: torch.Tensor) -> torch.Tensor:
    """Mean squared difference (B,) between frame t and frame t-1 warped onto it, over the
    reliable pixels only (what flicker is: change that the motion does not explain)."""
    diff = (current.float() - warp(previous, backward)).pow(2) * mask
    return diff.sum((1, 2, 3)) / (mask.sum((1, 2, 3)) * current.shape[1]).clamp_min(1.0)
