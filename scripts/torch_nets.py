"""PyTorch reference of the noiseda networks and the joint step, from the official code's
semantics (method.md §1-§4, §6.3): the VDN U-Net restorer (official models/net/UNet.py) and the
guided-diffusion U-Net (Palette's models/guided_diffusion_modules/unet.py), with the official
parameter names, which are also noiseda's. Shared by the parity fixture
(tests/fixtures/parity/make_parity_fixture.py) and the benchmark (bench/reference.py).

One deliberate non-official choice mirrors noiseda: GroupNorm uses 32 groups only where a layer
has >= 64 channels (and a multiple of 32); narrower layers use channels/2 groups.
"""

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# ---------------------------------------------------------------------------------------------
# §1 Restoration network (official models/net/UNet.py, VDN U-Net)
# ---------------------------------------------------------------------------------------------


class UNetConvBlock(nn.Module):
    def __init__(self, cin, cout, slope):
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=True),
            nn.LeakyReLU(slope),
            nn.Conv2d(cout, cout, 3, padding=1, bias=True),
            nn.LeakyReLU(slope),
        )

    def forward(self, x):
        return self.block(x)


class UNetUpBlock(nn.Module):
    def __init__(self, cin, cout, slope):
        super().__init__()
        self.up = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
            nn.Conv2d(cin, cout, 3, padding=1, bias=True),
        )
        self.conv_block = UNetConvBlock(2 * cout, cout, slope)

    def forward(self, x, bridge):
        up = self.up(x)
        return self.conv_block(torch.cat([up, bridge], 1))


class RestorationNet(nn.Module):
    """Predicts the residual R(x); the restored image is x + R(x)."""

    def __init__(self, depth=4, wf=64, slope=0.2):
        super().__init__()
        self.down_path = nn.ModuleList()
        prev = 3
        for i in range(depth):
            self.down_path.append(UNetConvBlock(prev, (2**i) * wf, slope))
            prev = (2**i) * wf
        self.up_path = nn.ModuleList()
        for i in reversed(range(depth - 1)):
            self.up_path.append(UNetUpBlock(prev, (2**i) * wf, slope))
            prev = (2**i) * wf
        self.last = nn.Conv2d(prev, 3, 3, padding=1, bias=True)

    def forward(self, x):
        blocks = []
        for i, down in enumerate(self.down_path):
            x = down(x)
            if i != len(self.down_path) - 1:
                blocks.append(x)
                x = F.avg_pool2d(x, 2)
        for i, up in enumerate(self.up_path):
            x = up(x, blocks[-i - 1])
        return self.last(x)


def restore_padded(net, x, multiple=8):
    """Test-time restore (method.md §7): replicate-pad right/bottom to a multiple, x + R(x), crop."""
    h, w = x.shape[-2:]
    ph, pw = (multiple - h % multiple) % multiple, (multiple - w % multiple) % multiple
    xp = F.pad(x, (0, pw, 0, ph), mode="replicate")
    return (xp + net(xp))[..., :h, :w]


# ---------------------------------------------------------------------------------------------
# §2 Diffusion network (Palette / openai guided-diffusion UNet, use_scale_shift_norm=True,
# resblock_updown=True, num_head_channels=32, legacy QKV attention, middle attention only)
# ---------------------------------------------------------------------------------------------


def norm_groups(ch):
    # See the module docstring: the Rust crate's documented group rule.
    return 32 if ch >= 64 and ch % 32 == 0 else max(ch // 2, 1)


def normalization(ch):
    return nn.GroupNorm(norm_groups(ch), ch, eps=1e-5)


def gamma_embedding(gammas, dim, max_period=10000):
    half = dim // 2
    steps = torch.arange(0, half, dtype=torch.float32, device=gammas.device)
    freqs = torch.exp(-math.log(max_period) * steps / half).to(gammas.dtype)
    args = gammas[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class ResBlock(nn.Module):
    def __init__(self, channels, emb_channels, dropout, out_channel, up=False, down=False):
        super().__init__()
        self.in_layers = nn.Sequential(
            normalization(channels), nn.SiLU(), nn.Conv2d(channels, out_channel, 3, padding=1)
        )
        self.updown = up or down
        self.up, self.down = up, down
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, 2 * out_channel))
        self.out_layers = nn.Sequential(
            normalization(out_channel),
            nn.SiLU(),
            nn.Dropout(p=dropout),
            nn.Conv2d(out_channel, out_channel, 3, padding=1),
        )
        if out_channel == channels:
            self.skip_connection = nn.Identity()
        else:
            self.skip_connection = nn.Conv2d(channels, out_channel, 1)

    def _resample(self, x):
        if self.up:
            return F.interpolate(x, scale_factor=2, mode="nearest")
        if self.down:
            return F.avg_pool2d(x, kernel_size=2, stride=2)
        return x

    def forward(self, x, emb):
        if self.updown:
            in_rest, in_conv = self.in_layers[:-1], self.in_layers[-1]
            h = in_rest(x)
            h = self._resample(h)
            x = self._resample(x)
            h = in_conv(h)
        else:
            h = self.in_layers(x)
        emb_out = self.emb_layers(emb)[..., None, None]
        out_norm, out_rest = self.out_layers[0], self.out_layers[1:]
        scale, shift = torch.chunk(emb_out, 2, dim=1)
        h = out_norm(h) * (1 + scale) + shift
        h = out_rest(h)
        return self.skip_connection(x) + h


class QKVAttentionLegacy(nn.Module):
    def __init__(self, n_heads):
        super().__init__()
        self.n_heads = n_heads

    def forward(self, qkv):
        bs, width, length = qkv.shape
        ch = width // (3 * self.n_heads)
        q, k, v = qkv.reshape(bs * self.n_heads, ch * 3, length).split(ch, dim=1)
        scale = 1 / math.sqrt(math.sqrt(ch))
        weight = torch.einsum("bct,bcs->bts", q * scale, k * scale)
        weight = torch.softmax(weight, dim=-1)
        a = torch.einsum("bts,bcs->bct", weight, v)
        return a.reshape(bs, -1, length)


class AttentionBlock(nn.Module):
    def __init__(self, channels, num_head_channels=32):
        super().__init__()
        self.norm = normalization(channels)
        self.qkv = nn.Conv1d(channels, channels * 3, 1)
        self.attention = QKVAttentionLegacy(channels // num_head_channels)
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def forward(self, x):
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        h = self.attention(self.qkv(self.norm(x)))
        h = self.proj_out(h)
        return (x + h).reshape(b, c, *spatial)


class EmbedSequential(nn.Sequential):
    def forward(self, x, emb):
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


class DiffusionUNet(nn.Module):
    def __init__(self, in_channel=9, out_channel=3, inner_channel=64, channel_mults=(1, 2, 4, 8),
                 res_blocks=2, dropout=0.0):
        super().__init__()
        self.inner_channel = inner_channel
        emb_dim = inner_channel * 4
        self.cond_embed = nn.Sequential(
            nn.Linear(inner_channel, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        ch = input_ch = int(channel_mults[0] * inner_channel)
        self.input_blocks = nn.ModuleList(
            [EmbedSequential(nn.Conv2d(in_channel, ch, 3, padding=1))]
        )
        chans = [ch]
        for level, mult in enumerate(channel_mults):
            for _ in range(res_blocks):
                layers = [ResBlock(ch, emb_dim, dropout, int(mult * inner_channel))]
                ch = int(mult * inner_channel)
                # attn_res=[16] never fires (method.md §2.1)
                self.input_blocks.append(EmbedSequential(*layers))
                chans.append(ch)
            if level != len(channel_mults) - 1:
                self.input_blocks.append(
                    EmbedSequential(ResBlock(ch, emb_dim, dropout, ch, down=True))
                )
                chans.append(ch)
        self.middle_block = EmbedSequential(
            ResBlock(ch, emb_dim, dropout, ch),
            AttentionBlock(ch, num_head_channels=32),
            ResBlock(ch, emb_dim, dropout, ch),
        )
        self.output_blocks = nn.ModuleList([])
        for level, mult in list(enumerate(channel_mults))[::-1]:
            for i in range(res_blocks + 1):
                ich = chans.pop()
                layers = [ResBlock(ch + ich, emb_dim, dropout, int(inner_channel * mult))]
                ch = int(inner_channel * mult)
                if level and i == res_blocks:
                    layers.append(ResBlock(ch, emb_dim, dropout, ch, up=True))
                self.output_blocks.append(EmbedSequential(*layers))
        assert ch == input_ch
        self.out = nn.Sequential(
            normalization(ch), nn.SiLU(), nn.Conv2d(input_ch, out_channel, 3, padding=1)
        )

    def forward(self, x, gammas):
        hs = []
        gammas = gammas.view(-1)
        emb = self.cond_embed(gamma_embedding(gammas, self.inner_channel))
        h = x
        for module in self.input_blocks:
            h = module(h, emb)
            hs.append(h)
        h = self.middle_block(h, emb)
        for module in self.output_blocks:
            h = torch.cat([h, hs.pop()], dim=1)
            h = module(h, emb)
        return self.out(h)


# ---------------------------------------------------------------------------------------------
# §3, §4, §6.3 joint step
# ---------------------------------------------------------------------------------------------


def linear_gammas(n=1000, lo=1e-6, hi=1e-2):
    betas = np.linspace(lo, hi, n, dtype=np.float64)
    return np.cumprod(1.0 - betas)


def swap(a, b, mask):
    """Per-sample slot swap where mask (b,1,1,1) is 1 (official clone + boolean assignment)."""
    m = mask.view(-1).bool()
    first, second = a.clone(), b.clone()
    first[m] = b[m]
    second[m] = a[m]
    return first, second


def charbonnier(x, y, eps=1e-3):
    return torch.mean(torch.sqrt((x - y) ** 2 + eps * eps))


def joint_step(g, d, inp, lam, margin=0.1):
    """method.md §6.3 with explicit draws (inp: x_s, y_s, x_r, gammas, eps, mask_pos, mask_neg)."""
    x_s, y_s, x_r = inp["x_s"], inp["y_s"], inp["x_r"]
    gammas, eps = inp["gammas"], inp["eps"]
    r_s, r_r = g(x_s), g(x_r)
    yh_s, yh_r = x_s + r_s, x_r + r_r
    charb = charbonnier(yh_s, y_s)
    g4 = gammas.view(-1, 1, 1, 1)
    y_t = g4.sqrt() * y_s + (1 - g4).sqrt() * eps
    a, b = swap(yh_s, yh_r, inp["mask_pos"])
    eps_pos = d(torch.cat([y_t, a, b], 1), gammas)
    a, b = swap(x_s + r_r, x_r + r_s, inp["mask_neg"])
    eps_neg = d(torch.cat([y_t, a, b], 1), gammas)
    d_pos = F.mse_loss(eps, eps_pos)
    d_neg = F.mse_loss(eps, eps_neg)
    hinge = F.relu(d_pos - d_neg + margin)
    l_noise = (d_pos + hinge) / 2
    loss = charb + lam * l_noise
    return dict(
        restored=yh_s, y_t=y_t, eps_pos=eps_pos, eps_neg=eps_neg, charbonnier=charb,
        d_pos=d_pos, d_neg=d_neg, hinge=hinge, l_noise=l_noise, loss=loss,
    )
