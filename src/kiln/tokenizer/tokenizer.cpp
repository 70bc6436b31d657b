// Tokenizer construction from GGUF metadata (tokenizer.ggml.*), special-token
// splitting, and decoding. The per-model algorithms live in spm.cpp / bpe.cpp /
// wordpiece.cpp.
#include "kiln/tokenizer/tokenizer.h"

#include <algorithm>
#include <cstdio>

#include "kiln/gguf/gguf.h"
#include "kiln/tokenizer/vocab.h"

namespace kiln {
namespace {

using tok::Vocab;

constexpr std::string_view kSpmSpace = "\xE2\x96\x81";  // '▁' U+2581

std::string replace_all(std::string_view s, std::string_view from, std::string_view to) {
  std::string out;
  out.reserve(s.size());
  size_t pos = 0;
  while (true) {
    const size_t hit = s.find(from, pos);
    if (hit == std::string_view::npos) break;
    out.append(s.substr(pos, hit - pos));
    out.append(to);
    pos = hit + from.size();
  }
  out.append(s.substr(pos));
  return out;
}

// "<0x0A>" -> 10; -1 if `text` is not a byte token spelling.
int parse_byte_token(std::string_view text) {
  if (text.size() != 6 || text.substr(0, 3) != "<0x" || text[5] != '>') return -1;
  int v = 0;
  for (size_t i = 3; i < 5; ++i) {
    const char c = text[i];
    v <<= 4;
    if (c >= '0' && c <= '9') v |= c - '0';
    else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
    else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
    else return -1;
  }
  return v;
}

std::string piece_of(const Vocab& v, const tok::TokenData& t) {
  switch (t.type) {
    case TokenType::byte: {
      const int b = parse_byte_token(t.text);
      return b >= 0 ? std::string(1, static_cast<char>(b)) : t.text;
    }
    case TokenType::control:
    case TokenType::unknown:
    case TokenType::user_defined:
      return t.text;
    default:
      break;
  }
  if (v.kind == TokenizerKind::spm) return replace_all(t.text, kSpmSpace, " ");
  if (v.kind == TokenizerKind::wpm) {
    // Word-initial pieces carry the space that separates words; decode drops
    // it in front of the first word.
    std::string_view s = t.text;
    if (v.wp_hash_continuation) {
      if (s.substr(0, 2) == "##") return std::string(s.substr(2));
      return std::string(" ").append(s);
    }
    if (s.substr(0, kSpmSpace.size()) == kSpmSpace) {
      return std::string(" ").append(s.substr(kSpmSpace.size()));
    }
    return std::string(s);
  }
  return v.byte_unicode.decode_all(t.text);
}

// Id from metadata key `key`, -1 when absent or out of range (some converters
// write ids past the vocabulary, e.g. a padding id of a larger embedding).
int32_t special_id(const gguf::File& f, const Vocab& v, std::string_view key) {
  const auto id = f.get_int(key);
  if (!id || *id < 0 || *id >= v.n_vocab()) return -1;
  return static_cast<int32_t>(*id);
}

// Control/user-defined tokens that end a turn or the text in the families kiln
// serves; EOS/EOT ids from the metadata are added separately.
constexpr std::string_view kEogTexts[] = {
    "<|eot_id|>", "<|eom_id|>", "<|end_of_text|>", "<|im_end|>", "<|endoftext|>",
    "<|end|>",    "<end_of_turn>", "<EOT>",        "<|return|>", "<|call|>",
};
// Used as EOT when tokenizer.ggml.eot_token_id is absent.
constexpr std::string_view kEotTexts[] = {"<|eot_id|>", "<|im_end|>", "<end_of_turn>", "<|end|>",
                                          "<EOT>"};

Status load_tokens(const gguf::File& f, Vocab& v) {
  const gguf::Array* toks = f.get_array("tokenizer.ggml.tokens");
  if (!toks || toks->elem_type != gguf::ValueType::STRING || toks->items.empty()) {
    return make_error(f.path() + ": tokenizer.ggml.tokens is missing or not a string array; "
                      "the GGUF has no vocabulary (was it converted without a tokenizer?)");
  }
  const size_t n = toks->items.size();
  if (n > static_cast<size_t>(INT32_MAX)) return make_error(f.path() + ": vocabulary too large");
  const gguf::Array* scores = f.get_array("tokenizer.ggml.scores");
  const gguf::Array* types = f.get_array("tokenizer.ggml.token_type");
  if (scores && scores->items.size() != n) {
    return make_error(f.path() + ": tokenizer.ggml.scores has " +
                      std::to_string(scores->items.size()) + " entries for " + std::to_string(n) +
                      " tokens");
  }
  if (types && types->items.size() != n) {
    return make_error(f.path() + ": tokenizer.ggml.token_type has " +
                      std::to_string(types->items.size()) + " entries for " + std::to_string(n) +
                      " tokens");
  }
  v.tokens.resize(n);
  for (size_t i = 0; i < n; ++i) {
    tok::TokenData& t = v.tokens[i];
    t.text = *toks->items[i].as_string();
    if (scores) t.score = static_cast<float>(scores->items[i].as_float().value_or(0.0));
    if (types) {
      const int64_t ty = types->items[i].as_int().value_or(1);
      t.type = (ty >= 0 && ty <= 6) ? TokenType(ty) : TokenType::normal;
    }
  }
  v.text_to_id.build(v.tokens);
  return Status::success();
}

void find_special_ids(const gguf::File& f, Vocab& v) {
  v.bos = special_id(f, v, "tokenizer.ggml.bos_token_id");
  v.eos = special_id(f, v, "tokenizer.ggml.eos_token_id");
  v.eot = special_id(f, v, "tokenizer.ggml.eot_token_id");
  v.eom = special_id(f, v, "tokenizer.ggml.eom_token_id");
  v.unk = special_id(f, v, "tokenizer.ggml.unknown_token_id");
  v.pad = special_id(f, v, "tokenizer.ggml.padding_token_id");
  if (v.kind == TokenizerKind::wpm) {
    // BERT: CLS opens the sequence (stored as cls_token_id, some files use
    // bos_token_id), SEP closes it. GGUF spells the key "seperator".
    if (v.bos < 0) v.bos = special_id(f, v, "tokenizer.ggml.cls_token_id");
    v.sep = special_id(f, v, "tokenizer.ggml.seperator_token_id");
    if (v.sep < 0) v.sep = special_id(f, v, "tokenizer.ggml.separator_token_id");
    if (v.bos < 0) v.bos = v.find("[CLS]");
    if (v.sep < 0) v.sep = v.find("[SEP]");
    if (v.unk < 0) v.unk = v.find("[UNK]");
  }
  const auto is_special = [&](int32_t id) {
    const TokenType t = v.tokens[id].type;
    return t == TokenType::control || t == TokenType::user_defined;
  };
  if (v.unk < 0 && v.kind == TokenizerKind::spm) {
    for (int32_t i = 0; i < v.n_vocab(); ++i) {
      if (v.tokens[i].type == TokenType::unknown) {
        v.unk = i;
        break;
      }
    }
  }
  if (v.eot < 0) {
    for (std::string_view s : kEotTexts) {
      const int32_t id = v.find(s);
      if (id >= 0 && is_special(id)) {
        v.eot = id;
        break;
      }
    }
  }
  v.is_eog.assign(v.tokens.size(), 0);
  const auto add_eog = [&](int32_t id) {
    if (id >= 0 && !v.is_eog[id]) {
      v.is_eog[id] = 1;
      v.eog.push_back(id);
    }
  };
  add_eog(v.eos);
  add_eog(v.eot);
  add_eog(v.eom);
  for (std::string_view s : kEogTexts) {
    const int32_t id = v.find(s);
    if (id >= 0 && is_special(id)) add_eog(id);
  }
}

void index_specials(Vocab& v) {
  for (int32_t i = 0; i < v.n_vocab(); ++i) {
    const tok::TokenData& t = v.tokens[i];
    const bool special = t.type == TokenType::control || t.type == TokenType::unknown ||
                         t.type == TokenType::user_defined;
    if (special && !t.text.empty()) {
      v.specials_by_first_byte[static_cast<uint8_t>(t.text[0])].push_back(i);
    }
  }
  for (auto& list : v.specials_by_first_byte) {
    std::stable_sort(list.begin(), list.end(), [&](int32_t a, int32_t b) {
      return v.tokens[a].text.size() > v.tokens[b].text.size();
    });
  }
}

Status setup_byte_tokens(Vocab& v) {
  v.byte_to_id.fill(-1);
  if (v.kind == TokenizerKind::wpm) return Status::success();  // no byte tokens
  if (v.kind == TokenizerKind::spm) {
    char name[8];
    for (int b = 0; b < 256; ++b) {
      std::snprintf(name, sizeof name, "<0x%02X>", b);
      v.byte_to_id[b] = v.find(name);
    }
  } else {
    for (int b = 0; b < 256; ++b) {
      v.byte_to_id[b] = v.find(v.byte_unicode.encode(static_cast<uint8_t>(b)));
    }
  }
  return Status::success();
}

Status setup_bpe(const gguf::File& f, Vocab& v) {
  v.pre_name = f.get_string("tokenizer.ggml.pre").value_or("default");
  const tok::PreTokenizerSpec* spec = nullptr;
  for (const auto& s : tok::pre_tokenizer_specs()) {
    if (s.name == v.pre_name) spec = &s;
  }
  if (!spec) {
    std::string known;
    for (std::string_view s : Tokenizer::known_pre_tokenizers()) {
      known += known.empty() ? "" : ", ";
      known += s;
    }
    return make_error(f.path() + ": unknown pre-tokenizer '" + v.pre_name +
                      "' (tokenizer.ggml.pre); kiln knows: " + known +
                      ". A GGUF converted for a newer model family needs its regex added to "
                      "src/kiln/tokenizer/bpe.cpp.");
  }
  auto pre = tok::PreTokenizer::compile(spec->regex);
  if (!pre.ok()) return make_error(f.path() + ": " + pre.message());
  v.pre = std::move(pre.value());
  v.ignore_merges = spec->ignore_merges;
  v.add_bos = spec->add_bos;

  const gguf::Array* merges = f.get_array("tokenizer.ggml.merges");
  if (!merges || merges->elem_type != gguf::ValueType::STRING) {
    return make_error(f.path() + ": tokenizer.ggml.merges is missing or not a string array; "
                      "byte-level BPE (tokenizer.ggml.model = gpt2) needs its merges");
  }
  std::vector<std::string_view> ms;
  ms.reserve(merges->items.size());
  for (const auto& m : merges->items) ms.push_back(*m.as_string());
  if (auto st = tok::bpe_load_merges(v, ms); !st.ok()) return make_error(f.path() + ": " + st.message());
  return Status::success();
}

void setup_wordpiece(Vocab& v) {
  size_t n_hash = 0, n_space = 0;
  bool upper = false;
  for (const tok::TokenData& t : v.tokens) {
    if (t.type != TokenType::normal) continue;
    if (t.text.size() > 2 && t.text.compare(0, 2, "##") == 0) ++n_hash;
    if (t.text.compare(0, kSpmSpace.size(), kSpmSpace) == 0) ++n_space;
    // "[CLS]"-style markers are upper case in uncased vocabularies too (and
    // files without token types list them as normal tokens).
    if (t.text.size() > 2 && t.text.front() == '[' && t.text.back() == ']') continue;
    for (char c : t.text) upper |= c >= 'A' && c <= 'Z';
  }
  v.wp_hash_continuation = n_hash > n_space;
  // GGUF has no key for BERT's do_lower_case: an uncased vocabulary (bge,
  // bert-base-uncased) has no upper-case letters in its normal tokens; a cased
  // one keeps case and accents, as Hugging Face does (strip_accents follows
  // lowercase by default).
  v.wp_lowercase = !upper;
  v.wp_strip_accents = !upper;
  // Defaults of BERT models: [CLS] text [SEP].
  v.add_bos = true;
  v.add_sep = true;
}

}  // namespace

std::vector<std::string_view> Tokenizer::known_pre_tokenizers() {
  std::vector<std::string_view> out;
  for (const auto& s : tok::pre_tokenizer_specs()) out.push_back(s.name);
  return out;
}

Result<Tokenizer> Tokenizer::from_gguf(const gguf::File& f) {
  auto v = std::make_shared<Vocab>();
  const auto model = f.get_string("tokenizer.ggml.model");
  if (!model) {
    return make_error(f.path() + ": tokenizer.ggml.model is missing; the GGUF carries no "
                      "tokenizer (use a GGUF converted with its vocabulary)");
  }
  v->model_name = *model;
  if (*model == "llama") {
    v->kind = TokenizerKind::spm;
  } else if (*model == "gpt2") {
    v->kind = TokenizerKind::bpe;
  } else if (*model == "bert") {
#if !KILN_HAVE_ICU
    return make_error(f.path() + ": a WordPiece (BERT) vocabulary needs ICU, and this kiln was "
                      "built without it; install libicu-dev (scripts/setup does) and rebuild");
#endif
    v->kind = TokenizerKind::wpm;
  } else {
    return make_error(f.path() + ": unsupported tokenizer.ggml.model '" + *model +
                      "'; kiln reads 'llama' (SentencePiece), 'gpt2' (byte-level BPE) and "
                      "'bert' (WordPiece)");
  }
  KILN_TRY(load_tokens(f, *v));
  KILN_TRY(setup_byte_tokens(*v));

  if (v->kind == TokenizerKind::spm) {
    // SentencePiece defaults of Llama 2 / Mistral files: BOS and a dummy prefix.
    v->add_bos = true;
    v->add_space_prefix = true;
  } else if (v->kind == TokenizerKind::wpm) {
    setup_wordpiece(*v);
  } else {
    KILN_TRY(setup_bpe(f, *v));
  }
  if (auto b = f.get_bool("tokenizer.ggml.add_bos_token")) v->add_bos = *b;
  if (auto b = f.get_bool("tokenizer.ggml.add_eos_token")) v->add_eos = *b;
  if (auto b = f.get_bool("tokenizer.ggml.add_sep_token")) v->add_sep = *b;
  if (v->kind == TokenizerKind::spm) {
    if (auto b = f.get_bool("tokenizer.ggml.add_space_prefix")) v->add_space_prefix = *b;
  }
  v->chat_template = f.get_string("tokenizer.chat_template").value_or("");

  find_special_ids(f, *v);
  index_specials(*v);
  for (auto& t : v->tokens) t.piece = piece_of(*v, t);
  return Tokenizer(std::move(v));
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special,
                                       bool parse_special) const {
  const Vocab& v = *v_;
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 4);
  if (add_special && v.add_bos && v.bos >= 0) out.push_back(v.bos);

  // SentencePiece (legacy Llama behaviour) puts its dummy prefix in front of
  // the text and again after every special token.
  bool after_special = true;
  const auto encode_raw = [&](std::string_view raw) {
    if (raw.empty()) return;
    if (v.kind == TokenizerKind::spm) {
      std::string s;
      if (v.add_space_prefix && after_special) s = kSpmSpace;
      s += replace_all(raw, " ", kSpmSpace);
      tok::spm_encode(v, s, out);
    } else if (v.kind == TokenizerKind::wpm) {
      tok::wordpiece_encode(v, raw, out);
    } else {
      tok::bpe_encode(v, raw, out);
    }
    after_special = false;
  };

  // Leftmost-longest matching of special-token text.
  size_t raw_begin = 0;
  for (size_t pos = 0; pos < text.size();) {
    int32_t hit = -1;
    for (int32_t id : v.specials_by_first_byte[static_cast<uint8_t>(text[pos])]) {
      const tok::TokenData& t = v.tokens[id];
      if (!parse_special && t.type != TokenType::user_defined) continue;
      if (text.compare(pos, t.text.size(), t.text) == 0) {
        hit = id;
        break;
      }
    }
    if (hit < 0) {
      ++pos;
      continue;
    }
    encode_raw(text.substr(raw_begin, pos - raw_begin));
    out.push_back(hit);
    after_special = true;
    pos += v.tokens[hit].text.size();
    raw_begin = pos;
  }
  encode_raw(text.substr(raw_begin));

  if (add_special && v.add_eos && v.eos >= 0) out.push_back(v.eos);
  if (add_special && v.add_sep && v.sep >= 0) out.push_back(v.sep);
  return out;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special) const {
  const Vocab& v = *v_;
  std::string out;
  // SentencePiece removes the dummy prefix of the first word: the leading
  // space of the first piece, as long as nothing has been output before it.
  // WordPiece: the space of the first word-initial piece.
  bool strip_space =
      (v.kind == TokenizerKind::spm && v.add_space_prefix) || v.kind == TokenizerKind::wpm;
  for (int32_t id : ids) {
    if (id < 0 || id >= v.n_vocab()) continue;
    const tok::TokenData& t = v.tokens[id];
    const bool hidden = t.type == TokenType::control || t.type == TokenType::unknown;
    if (hidden && skip_special) continue;
    std::string_view p = t.piece;
    if (strip_space && t.type != TokenType::byte && !hidden && !p.empty() && p[0] == ' ') {
      p.remove_prefix(1);
    }
    if (!p.empty() || !hidden) strip_space = false;
    // WordPiece: control and unknown tokens are words of their own.
    if (v.kind == TokenizerKind::wpm && hidden && !out.empty()) out += ' ';
    out.append(p);
  }
  return out;
}

const std::string& Tokenizer::token_to_piece(int32_t id) const {
  static const std::string empty;
  return id >= 0 && id < v_->n_vocab() ? v_->tokens[id].piece : empty;
}
const std::string& Tokenizer::token_text(int32_t id) const {
  static const std::string empty;
  return id >= 0 && id < v_->n_vocab() ? v_->tokens[id].text : empty;
}
TokenType Tokenizer::token_type(int32_t id) const {
  return id >= 0 && id < v_->n_vocab() ? v_->tokens[id].type : TokenType::undefined;
}
float Tokenizer::token_score(int32_t id) const {
  return id >= 0 && id < v_->n_vocab() ? v_->tokens[id].score : 0.0f;
}
int32_t Tokenizer::token_id(std::string_view text) const { return v_->find(text); }

TokenizerKind Tokenizer::kind() const { return v_->kind; }
const std::string& Tokenizer::model_name() const { return v_->model_name; }
const std::string& Tokenizer::pre_name() const { return v_->pre_name; }
int32_t Tokenizer::n_vocab() const { return v_->n_vocab(); }
int32_t Tokenizer::bos_id() const { return v_->bos; }
int32_t Tokenizer::eos_id() const { return v_->eos; }
int32_t Tokenizer::eot_id() const { return v_->eot; }
int32_t Tokenizer::unk_id() const { return v_->unk; }
int32_t Tokenizer::pad_id() const { return v_->pad; }
int32_t Tokenizer::sep_id() const { return v_->sep; }
bool Tokenizer::add_sep() const { return v_->add_sep; }
bool Tokenizer::add_bos() const { return v_->add_bos; }
bool Tokenizer::add_eos() const { return v_->add_eos; }
bool Tokenizer::add_space_prefix() const { return v_->add_space_prefix; }
bool Tokenizer::is_eog(int32_t id) const {
  return id >= 0 && id < v_->n_vocab() && v_->is_eog[id] != 0;
}
const std::vector<int32_t>& Tokenizer::eog_ids() const { return v_->eog; }
const std::string& Tokenizer::chat_template() const { return v_->chat_template; }

}  // namespace kiln
