"""Build a tiny random-weight BLIP-2 (weights, tokenizer, processor) offline, in seconds.

    python -m model.tiny OUT_DIR [--image-size 64] [--seed 0]
    python -m model.tiny OUT_DIR --architecture blip2-opt-2.7b --device cuda   # full size, for GPU benchmarks

The result loads exactly like `Salesforce/blip2-opt-2.7b` (`Blip2ForConditionalGeneration` +
`Blip2Processor` from a folder), so tests, `make run` and the benchmarks run the real model
code path with no download. Its words are random: it proves plumbing and measures overheads,
not quality. The tokenizer is word-level over a small built-in product vocabulary (other words
become `<unk>`); special tokens follow OPT (`</s>` is BOS and EOS, `<pad>` pads on the left).

`--architecture blip2-opt-2.7b` builds the full-size architecture of `Salesforce/blip2-opt-2.7b`
(ViT-g, Q-Former, OPT-2.7B: 3.74 B parameters) with random weights in fp16: the same FLOPs and
bytes per step as the real model, so it measures real speed without downloading it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import Blip2Config

# A small product vocabulary: enough merges that prompts and answers tokenize to a few tokens.
_CORPUS = """
a photo of a product question answer what is this product brand color material condition text
visible on it made of red blue green black white grey gray brown yellow orange pink purple silver
gold leather cotton wool plastic metal wood glass steel ceramic rubber canvas denim new used worn
refurbished good excellent fair scratched shoe shoes sneaker boot bag handbag backpack wallet watch
phone laptop camera headphones chair table lamp mug bottle toy book shirt jacket dress hat ring
necklace bracelet sunglasses the an of in on with and for it its no none unknown there logo label
"""

SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>"]  # OPT's ids 0..3
# The language model's ids for them, as OPT uses them: `</s>` begins and ends, `<pad>` pads.
EOS_ID = SPECIAL_TOKENS.index("</s>")
PAD_ID = SPECIAL_TOKENS.index("<pad>")
IMAGE_TOKEN = "<image>"


def build_tokenizer() -> object:
    """Build a word-level tokenizer over the built-in vocabulary, wrapped as a fast tokenizer.

    Word-level (not byte-level BPE) so that random weights still emit readable words, which
    keeps `make run` demos and the template writer's output legible.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = sorted(set(_CORPUS.split()) | {"?", ":", ".", ",", "'", "-"})
    vocab = {token: index for index, token in enumerate([*SPECIAL_TOKENS, *words])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.add_special_tokens(SPECIAL_TOKENS)  # so decoding with skip_special_tokens drops all four
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation()])
    bos = vocab["</s>"]
    tok.post_processor = processors.TemplateProcessing(single="</s> $A", special_tokens=[("</s>", bos)])
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]  # transformers ships it untyped
        tokenizer_object=tok,
        bos_token="</s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        padding_side="left",
        model_max_length=512,
    )


ARCHITECTURES = ("tiny", "blip2-opt-2.7b")


def full_size_config(*, image_token_id: int) -> Blip2Config:
    """Return the configuration of `Salesforce/blip2-opt-2.7b` (its published dimensions)."""
    from transformers import Blip2Config, Blip2QFormerConfig, Blip2VisionConfig, OPTConfig

    return Blip2Config(
        vision_config=Blip2VisionConfig().to_dict(),  # the defaults are ViT-g/14 at 224 px
        qformer_config=Blip2QFormerConfig().to_dict(),  # 12 layers, 768 wide, cross-attention every 2nd
        text_config=OPTConfig(
            vocab_size=50304,
            hidden_size=2560,
            ffn_dim=10240,
            num_hidden_layers=32,
            num_attention_heads=32,
            word_embed_proj_dim=2560,
            max_position_embeddings=2048,
            bos_token_id=EOS_ID,
            eos_token_id=EOS_ID,
            pad_token_id=PAD_ID,
        ).to_dict(),
        num_query_tokens=32,
        image_token_index=image_token_id,
    )


def tiny_config(*, vocab_size: int, image_token_id: int, image_size: int) -> Blip2Config:
    """Return a BLIP-2 configuration small enough to build and run in about a second."""
    from transformers import Blip2Config, Blip2QFormerConfig, Blip2VisionConfig, OPTConfig

    return Blip2Config(
        vision_config=Blip2VisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=image_size,
            patch_size=16,
        ).to_dict(),
        qformer_config=Blip2QFormerConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            encoder_hidden_size=32,
            vocab_size=vocab_size,
        ).to_dict(),
        text_config=OPTConfig(
            vocab_size=vocab_size,
            hidden_size=32,
            ffn_dim=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            word_embed_proj_dim=32,
            max_position_embeddings=128,
            bos_token_id=EOS_ID,
            eos_token_id=EOS_ID,
            pad_token_id=PAD_ID,
        ).to_dict(),
        num_query_tokens=8,
        image_token_index=image_token_id,
    )


def build(
    out_dir: Path, *, image_size: int = 64, seed: int = 0, architecture: str = "tiny", device: str = "cpu"
) -> Path:
    """Write a random-weight BLIP-2 checkpoint (safetensors), tokenizer and processor into `out_dir`."""
    import torch
    from transformers import Blip2ForConditionalGeneration, Blip2Processor
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {', '.join(ARCHITECTURES)}; got {architecture!r}")
    full_size = architecture == "blip2-opt-2.7b"
    torch.manual_seed(seed)
    side = 224 if full_size else image_size
    processor = Blip2Processor(  # type: ignore[no-untyped-call]  # transformers ships it untyped
        image_processor=BlipImageProcessorPil(size={"height": side, "width": side}),
        tokenizer=build_tokenizer(),
        num_query_tokens=32 if full_size else 8,
    )
    # The processor added <image>; the language model's vocabulary must cover it.
    image_token_id = processor.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    if full_size:
        config = full_size_config(image_token_id=image_token_id)
    else:
        config = tiny_config(vocab_size=len(processor.tokenizer), image_token_id=image_token_id, image_size=side)
    with torch.device(device):
        model = Blip2ForConditionalGeneration(config)
    model.train(False)  # eval mode (`eval()` is untyped in transformers)
    if full_size:
        model.to(torch.float16)  # type: ignore[arg-type]  # transformers' decorator mistypes Module.to
    else:
        # BLIP-2's own init (std 0.02) makes a tiny random model emit one token forever; wider
        # weights make its words depend on the image and the prompt, which tests can then see.
        with torch.no_grad():
            for parameter in model.parameters():
                if parameter.dim() >= 2:
                    parameter.normal_(0.0, 0.3)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.tiny", description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--image-size", type=int, default=64, help="input side in pixels (multiple of 16)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--architecture", choices=ARCHITECTURES, default="tiny")
    parser.add_argument("--device", default="cpu", help="where to initialise the weights (cuda is much faster)")
    args = parser.parse_args(argv)
    path = build(
        args.out_dir, image_size=args.image_size, seed=args.seed, architecture=args.architecture, device=args.device
    )
    print(f"{args.architecture} BLIP-2 with random weights written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
