"""Pixel-space tensor operations: resizing and colour transforms (pure: tensors in, tensors out).

All images here are float tensors (B, 3, H, W), RGB in [0, 1].
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .layers import scaled_size

# YIQ (NTSC), the space Gatys et al. (2016, "Preserving colour in neural artistic style
# transfer") use to separate luminance from colour.
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114],
                            [0.595716, -0.274453, -0.321263],
                            [0.211456, -0.522591, 0.311135]])
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


def resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize to (h, w): antialiased bicubic down, bicubic up, clamped back into [0, 1]."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    out = F.interpolate(images, size=size, mode="bicubic", align_corners=False, antialias=True)
    # In place: at print sizes each image-sized copy is ~145 MB per 12 MP image.
    return out.clamp_(0.0, 1.0).contiguous()   # interpolate may keep channels-last strides


def resize_long_side(images: torch.Tensor, long_side: int) -> torch.Tensor:
    return resize(images, scaled_size(images.shape[-2], images.shape[-1], long_side))


def _apply(matrix: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,bjhw->bihw", matrix.to(images), images)


def rgb_to_yiq(images: torch.Tensor) -> torch.Tensor:
    return _apply(_RGB_TO_YIQ, images)


def yiq_to_rgb(images: torch.Tensor) -> torch.Tensor:
    return _apply(_YIQ_TO_RGB, images)


def luminance(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 1, H, W) luma Y."""
    return rgb_to_yiq(images)[:, :1]


def grey(images: torch.Tensor) -> torch.Tensor:
    """Luminance replicated to three channels, the input of luminance-only transfer."""
    return luminance(images).expand(-1, 3, -1, -1).contiguous()


def match_luminance(style: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """Grey style image whose luminance mean and std match the content's (Gatys et al. 2016, §3)."""
    ys, yc = luminance(style), luminance(content)
    matched = (ys - ys.mean()) * (yc.std() / (ys.std() + 1e-8)) + yc.mean()
    return matched.clamp(0.0, 1.0).expand(-1, 3, -1, -1).contiguous()


def combine_luminance(stylized: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """Luminance of `stylized` with the colour (I, Q) of `content`; same size required."""
    yiq = torch.cat([luminance(stylized), rgb_to_yiq(content)[:, 1:]], dim=1)
    return yiq_to_rgb(yiq).clamp(0.0, 1.0)


def _sqrtm(cov: torch.Tensor, inverse: bool = False) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh(cov)
    vals = vals.clamp_min(1e-6)
    vals = vals.rsqrt() if inverse else vals.sqrt()
    return vecs @ torch.diag(vals) @ vecs.T


def match_color(style: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """Linear colour transfer: style pixels mapped so their mean and covariance equal the content's.

    x' = A (x − μ_s) + μ_c with A = Σ_c^½ Σ_s^−½ (Gatys et al. 2016, "colour histogram matching").
    """
    s = style[0].reshape(3, -1).double()
    c = content[0].reshape(3, -1).double()
    mu_s, mu_c = s.mean(1, keepdim=True), c.mean(1, keepdim=True)
    eye = torch.eye(3, dtype=s.dtype, device=s.device)   # on the images' device: CUDA refuses a CPU eye
    cov_s = torch.cov(s) + 1e-5 * eye
    cov_c = torch.cov(c) + 1e-5 * eye
    a = _sqrtm(cov_c) @ _sqrtm(cov_s, inverse=True)
    out = a @ (s - mu_s) + mu_c
    return out.reshape(style.shape).to(style.dtype).clamp(0.0, 1.0)


def style_variant(style: torch.Tensor, content: torch.Tensor, preserve_color: str) -> torch.Tensor:
    """The style image as the optimization should see it under a colour-preservation mode."""
    if preserve_color == "luminance":
        return match_luminance(style, content)
    if preserve_color == "histogram":
        return match_color(style, content)
    return style
