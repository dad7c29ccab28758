"""The demo model's components, built from config in the standard diffusers/transformers classes.

Everything here is an ordinary ``CLIPTokenizer``, ``CLIPTextModel``, ``UNet2DConditionModel``,
``AutoencoderKL``, ``DDIMScheduler``, ``ControlNetModel`` or ``CLIPModel``, so the shipped
weights load through exactly the code real checkpoints take.

The autoencoder is set analytically to the identity (pixel space, f1): a CPU probe found that an
f4 VAE trained for minutes blurred colours, and a 32x32 pixel-space UNet is cheap anyway.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from .world import vocabulary

__all__ = [
    "MAX_TOKENS",
    "RESOLUTION",
    "build_tokenizer",
    "build_text_encoder",
    "build_unet",
    "build_identity_vae",
    "build_scheduler",
]

MAX_TOKENS = 32
RESOLUTION = 32
_BOS, _EOS = "<|startoftext|>", "<|endoftext|>"


def build_tokenizer() -> CLIPTokenizer:
    """A CLIP BPE tokenizer whose merges make every world word exactly one token.

    Single characters stay in the vocabulary, so an unknown word degrades to characters
    rather than to ``<|endoftext|>``.
    """
    letters = sorted({ch for w in vocabulary() for ch in w} | set("abcdefghijklmnopqrstuvwxyz"))
    vocab: dict[str, int] = {}
    for token in [*letters, *(ch + "</w>" for ch in letters)]:
        vocab.setdefault(token, len(vocab))
    merges: list[tuple[str, str]] = []
    for word in vocabulary():
        # Replay BPE with the merges so far; append a lowest-priority merge until one token.
        while len(parts := _bpe(list(word[:-1]) + [word[-1] + "</w>"], merges)) > 1:
            merges.append((parts[0], parts[1]))
            vocab.setdefault(parts[0] + parts[1], len(vocab))
    vocab[_BOS] = len(vocab)
    vocab[_EOS] = len(vocab)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=MAX_TOKENS)
    for word in vocabulary():
        ids = tokenizer(word, add_special_tokens=False).input_ids
        if len(ids) != 1:
            raise AssertionError(f"world word {word!r} tokenizes to {ids}")
    return tokenizer


def _bpe(parts: list[str], merges: list[tuple[str, str]]) -> list[str]:
    rank = {m: i for i, m in enumerate(merges)}
    while len(parts) > 1:
        pairs = [(rank.get((a, b), len(rank)), i) for i, (a, b) in enumerate(zip(parts, parts[1:], strict=False))]
        best, i = min(pairs)
        if best == len(rank):
            break
        parts = [*parts[:i], parts[i] + parts[i + 1], *parts[i + 2 :]]
    return parts


def build_text_encoder(vocab_size: int, hidden: int = 64, seed: int = 0) -> CLIPTextModel:
    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=MAX_TOKENS,
        projection_dim=hidden,
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
    )
    return CLIPTextModel(config)


def build_unet(cross_attention_dim: int = 64, seed: int = 0) -> UNet2DConditionModel:
    """A ~1.4M-parameter pixel-space UNet, the size the CPU probe found learned fastest."""
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=RESOLUTION,
        in_channels=3,
        out_channels=3,
        block_out_channels=(32, 48, 64),
        # attention at 16x16 and 8x8 only: at 32x32 it would triple the cost of a step
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=8,
        norm_num_groups=16,
    )


def build_identity_vae() -> AutoencoderKL:
    """An ``AutoencoderKL`` that is the identity to ~1e-4: latents are the pixels in [-1, 1].

    Every residual branch (resnets, attention) is zeroed, so the blocks pass through. The one
    non-linear stage, GroupNorm + SiLU before ``conv_out``, is linearised: each group holds
    (x, -x, +M, -M), so its mean is 0 and its variance ~M^2/2 whatever x is, and a large
    GroupNorm bias keeps SiLU on its linear branch; ``conv_out`` removes that bias again.
    """
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",),
        up_block_types=("UpDecoderBlock2D",),
        block_out_channels=(32,),
        layers_per_block=1,
        latent_channels=3,
        norm_num_groups=8,
        sample_size=RESOLUTION,
        scaling_factor=1.0,
    )
    big, shift = 100.0, 20.0
    sigma = big / 2**0.5
    with torch.no_grad():
        for p in vae.parameters():
            p.zero_()
        for module in vae.modules():  # every GroupNorm keeps unit scale (zeroed branches ignore it)
            if isinstance(module, torch.nn.GroupNorm):
                module.weight.fill_(1.0)
        for coder, n_out in ((vae.encoder, 6), (vae.decoder, 3)):
            conv_in, norm, conv_out = coder.conv_in, coder.conv_norm_out, coder.conv_out
            for c in range(3):
                base = 4 * c
                conv_in.weight[base, c, 1, 1] = 1.0
                conv_in.weight[base + 1, c, 1, 1] = -1.0
                conv_in.bias[base + 2] = big
                conv_in.bias[base + 3] = -big
                norm.weight[base] = sigma
                norm.bias[base] = shift
                conv_out.weight[c, base, 1, 1] = 1.0
                conv_out.bias[c] = -shift
            if n_out == 6:  # encoder: channels 3..5 are log-variances, pinned very low
                conv_out.bias[3:6] = -30.0
        for conv in (vae.quant_conv, vae.post_quant_conv):
            if conv is not None:
                conv.weight[:, :, 0, 0] = torch.eye(conv.weight.shape[0])
    return vae


def build_scheduler() -> DDIMScheduler:
    """Cosine-schedule DDIM, epsilon prediction, as trained.

    The cosine schedule's last step has almost no signal (alpha_bar(999) ~ 2e-9), where an
    epsilon model's x0 estimate explodes: sample with "leading" spacing (first step 951) and
    clip x0 to the pixel range. ``thresholding`` with ``sample_max_value=1`` is that clip, and
    unlike ``clip_sample`` StableDiffusionPipeline leaves it on.
    """
    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        prediction_type="epsilon",
        clip_sample=False,
        thresholding=True,
        sample_max_value=1.0,
        set_alpha_to_one=True,
        steps_offset=1,
        timestep_spacing="leading",
    )
