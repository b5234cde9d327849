// Safetensors reading and writing, and the checkpoint's model/optimizer layout (files written through AtomicFile).
#include "charlm/checkpoint.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>

#include <fmt/format.h>

#include "charlm/error.hpp"
#include "charlm/json_limits.hpp"

namespace charlm {

static_assert(std::endian::native == std::endian::little, "safetensors data is little-endian");

namespace {

constexpr std::uint64_t kMaxHeaderBytes = 100'000'000;
constexpr std::int64_t kMostCount = 1'000'000'000'000'000;  // of steps, windows or evaluations in a training state
constexpr int kMaxJsonDepth = 64;
constexpr const char* kFormat = "charlm-checkpoint-1";

}  // namespace

SafetensorsFile parse_safetensors(std::string_view bytes, const std::string& source_name) {
    auto fail = [&](const std::string& problem) { return Error(fmt::format("{}: {}", source_name, problem)); };
    if (bytes.size() < 8) throw fail("too short to be a safetensors file (under 8 bytes)");
    std::uint64_t header_length = 0;
    std::memcpy(&header_length, bytes.data(), 8);
    if (header_length > bytes.size() - 8 || header_length > kMaxHeaderBytes)
        throw fail(fmt::format("header length {} runs past the end of the file ({} bytes); the file is truncated or not safetensors",
                               header_length, bytes.size()));
    const std::string_view header_text = bytes.substr(8, header_length);
    const std::string_view data = bytes.substr(8 + header_length);
    if (!json_nesting_within(header_text, kMaxJsonDepth)) throw fail("header JSON is nested too deeply");
    const auto header = nlohmann::json::parse(header_text, nullptr, false);
    if (header.is_discarded() || !header.is_object()) throw fail("header is not a valid JSON object");

    SafetensorsFile file;
    struct Range { std::uint64_t begin, end; std::string name; };
    std::vector<Range> ranges;
    for (const auto& [name, entry] : header.items()) {
        if (name == "__metadata__") {
            if (!entry.is_object()) throw fail("__metadata__ is not a JSON object");
            for (const auto& [key, value] : entry.items()) {
                if (!value.is_string()) throw fail(fmt::format("metadata '{}' is not a string", key));
                file.metadata[key] = value.get<std::string>();
            }
            continue;
        }
        if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") || !entry.contains("data_offsets"))
            throw fail(fmt::format("tensor '{}' lacks dtype, shape or data_offsets", name));
        const auto& dtype = entry["dtype"];
        if (!dtype.is_string() || dtype.get<std::string>() != "F32")
            throw fail(fmt::format("tensor '{}' has dtype {}, but charlm reads only F32", name, dtype.dump()));
        const auto& shape = entry["shape"];
        const auto& offsets = entry["data_offsets"];
        if (!shape.is_array() || shape.size() > 8) throw fail(fmt::format("tensor '{}' has an invalid shape", name));
        std::uint64_t elements = 1;
        StoredTensor tensor;
        for (const auto& dimension : shape) {
            if (!dimension.is_number_unsigned() || dimension.get<std::uint64_t>() > (std::uint64_t{1} << 40))
                throw fail(fmt::format("tensor '{}' has an invalid shape {}", name, shape.dump()));
            const auto size = dimension.get<std::uint64_t>();
            if (size != 0 && elements > (std::uint64_t{1} << 40) / size)
                throw fail(fmt::format("tensor '{}' is impossibly large", name));
            elements *= size;
            tensor.shape.push_back(static_cast<std::int64_t>(size));
        }
        if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() || !offsets[1].is_number_unsigned())
            throw fail(fmt::format("tensor '{}' has invalid data_offsets", name));
        const auto begin = offsets[0].get<std::uint64_t>(), end = offsets[1].get<std::uint64_t>();
        if (begin > end || end > data.size())
            throw fail(fmt::format("tensor '{}' data [{}, {}) lies outside the {} bytes of data; the file is truncated or corrupt",
                                   name, begin, end, data.size()));
        if (end - begin != elements * 4)
            throw fail(fmt::format("tensor '{}' has {} bytes of data, but its shape {} needs {}", name, end - begin,
                                   shape.dump(), elements * 4));
        tensor.values.resize(elements);
        if (elements) std::memcpy(tensor.values.data(), data.data() + begin, elements * 4);
        ranges.push_back({begin, end, name});
        file.tensors.emplace(name, std::move(tensor));
    }
    std::sort(ranges.begin(), ranges.end(), [](const Range& a, const Range& b) { return a.begin < b.begin; });
    for (std::size_t i = 1; i < ranges.size(); ++i)
        if (ranges[i].begin < ranges[i - 1].end)
            throw fail(fmt::format("tensors '{}' and '{}' overlap", ranges[i - 1].name, ranges[i].name));
    return file;
}

std::string serialize_safetensors(const std::vector<TensorToWrite>& tensors,
                                  const std::map<std::string, std::string>& metadata) {
    nlohmann::json header = nlohmann::json::object();
    header["__metadata__"] = metadata;
    std::uint64_t offset = 0;
    for (const auto& tensor : tensors) {
        std::uint64_t elements = 1;
        for (auto dimension : tensor.shape) elements *= static_cast<std::uint64_t>(dimension);
        header[tensor.name] = {{"dtype", "F32"}, {"shape", tensor.shape}, {"data_offsets", {offset, offset + 4 * elements}}};
        offset += 4 * elements;
    }
    std::string header_text = header.dump();
    header_text.append((8 - header_text.size() % 8) % 8, ' ');  // keep tensor data 8-byte aligned
    std::string bytes(8, '\0');
    const std::uint64_t header_length = header_text.size();
    std::memcpy(bytes.data(), &header_length, 8);
    bytes += header_text;
    bytes.reserve(bytes.size() + offset);
    for (const auto& tensor : tensors) {
        std::uint64_t elements = 1;
        for (auto dimension : tensor.shape) elements *= static_cast<std::uint64_t>(dimension);
        bytes.append(reinterpret_cast<const char*>(tensor.values), elements * 4);
    }
    return bytes;
}

static std::string optimizer_name(const std::string& kind, const std::string& parameter) {
    return fmt::format("optimizer.{}.{}", kind, parameter);
}

static std::string average_name(const std::string& parameter) { return fmt::format("average.{}", parameter); }

void save_checkpoint(const std::filesystem::path& path, const Model<float>& model, const Vocab& vocab,
                     const TrainingState& training, const Adam* optimizer, const ModelState<float>* carried_state,
                     const std::vector<Matrix<float>>* average) {
    std::vector<TensorToWrite> tensors;
    for (const auto& parameter : model.parameters())
        tensors.push_back({parameter.name, parameter.shape, parameter.value.data()});
    if (average)
        for (std::size_t i = 0; i < model.parameters().size(); ++i)
            tensors.push_back({average_name(model.parameters()[i].name), model.parameters()[i].shape, (*average)[i].data()});
    if (optimizer) {
        const auto& parameters = model.parameters();
        for (std::size_t i = 0; i < parameters.size(); ++i) {
            tensors.push_back({optimizer_name("exp_avg", parameters[i].name), parameters[i].shape,
                               optimizer->first_moments()[i].data()});
            tensors.push_back({optimizer_name("exp_avg_sq", parameters[i].name), parameters[i].shape,
                               optimizer->second_moments()[i].data()});
        }
    }
    if (carried_state) {
        for (std::size_t layer = 0; layer < carried_state->hidden.size(); ++layer) {
            const auto& hidden = carried_state->hidden[layer];
            const std::vector<std::int64_t> shape = {hidden.rows(), hidden.cols()};
            tensors.push_back({fmt::format("state.hidden_l{}", layer), shape, hidden.data()});
            if (layer < carried_state->cell.size())  // the LSTM's; the other cells carry no c
                tensors.push_back({fmt::format("state.cell_l{}", layer), shape, carried_state->cell[layer].data()});
        }
    }
    // The loader refuses a non-finite value, so writing one would replace a good file with a useless one.
    for (const auto& tensor : tensors) {
        std::int64_t count = 1;
        for (const std::int64_t size : tensor.shape) count *= size;
        const auto* end = tensor.values + count;
        const auto* bad = std::find_if(tensor.values, end, [](float value) { return !std::isfinite(value); });
        if (bad != end)
            throw Error(fmt::format("not writing {}: tensor '{}' holds {} at element {}; the previous file is unchanged",
                                    path.string(), tensor.name, *bad, bad - tensor.values));
    }
    nlohmann::json training_json = {
        {"step", training.step},
        {"best_validation_loss", std::isfinite(training.best_validation_loss) ? nlohmann::json(training.best_validation_loss)
                                                                               : nlohmann::json(nullptr)},
        {"evaluations_since_best", training.evaluations_since_best},
        {"best_step", training.best_step},
        {"best_validation_characters", training.best_validation_characters},
        {"best_is_averaged", training.best_is_averaged},
        {"data_position", training.data_position},
        {"rng_state", training.rng_state},
        {"options", training.options},
    };
    if (optimizer) training_json["optimizer_steps"] = optimizer->step_count();
    std::vector<std::uint32_t> code_points(vocab.code_points().begin(), vocab.code_points().end());
    const std::map<std::string, std::string> metadata = {
        {"format", kFormat},
        {"config", model.config().to_json().dump()},
        {"vocab", nlohmann::json(code_points).dump()},
        {"training", training_json.dump()},
    };
    write_file_atomically(path, serialize_safetensors(tensors, metadata));
}

Checkpoint parse_checkpoint(std::string_view bytes, const std::string& source_name) {
    auto fail = [&](const std::string& problem) { return Error(fmt::format("{}: {}", source_name, problem)); };
    SafetensorsFile file = parse_safetensors(bytes, source_name);
    auto metadata_json = [&](const char* key) {
        auto found = file.metadata.find(key);
        if (found == file.metadata.end()) throw fail(fmt::format("metadata has no '{}'; this is not a charlm checkpoint", key));
        auto json = nlohmann::json::parse(found->second, nullptr, false);
        if (json.is_discarded() || !json_nesting_within(found->second, kMaxJsonDepth))
            throw fail(fmt::format("metadata '{}' is not valid JSON", key));
        return json;
    };
    auto format = file.metadata.find("format");
    if (format == file.metadata.end() || format->second != kFormat)
        throw fail("not a charlm checkpoint (no 'format: " + std::string(kFormat) + "' in its metadata)");

    Checkpoint checkpoint;
    try {
        checkpoint.config = ModelConfig::from_json(metadata_json("config"));
    } catch (const Error& error) {
        throw fail(error.what());
    }
    const auto vocab_json = metadata_json("vocab");
    if (!vocab_json.is_array()) throw fail("metadata 'vocab' is not a list of code points");
    std::vector<char32_t> code_points;
    for (const auto& entry : vocab_json) {
        if (!entry.is_number_unsigned() || entry.get<std::uint64_t>() > 0x10FFFF)
            throw fail("metadata 'vocab' holds something that is not a code point");
        code_points.push_back(static_cast<char32_t>(entry.get<std::uint64_t>()));
    }
    try {
        checkpoint.vocab = Vocab::from_code_points(std::move(code_points));
    } catch (const Error& error) {
        throw fail(error.what());
    }
    if (checkpoint.vocab.size() != static_cast<std::size_t>(checkpoint.config.vocab_size))
        throw fail(fmt::format("vocabulary has {} entries but the config says {}", checkpoint.vocab.size(),
                               checkpoint.config.vocab_size));

    const auto training_json = metadata_json("training");
    if (!training_json.is_object()) throw fail("metadata 'training' is not a JSON object");
    // Steps, windows and evaluations are counted from zero, and 10^15 of them is decades at a million
    // a second: a count outside that was damaged or made up, and would reach Adam's bias correction or
    // the data cursor as nonsense. Each refusal names the field.
    auto count = [&](const char* field) -> std::int64_t {
        const auto& value = training_json.at(field);
        const bool in_range = value.is_number_unsigned() ? value.get<std::uint64_t>() <= static_cast<std::uint64_t>(kMostCount)
                              : value.is_number_integer() ? value.get<std::int64_t>() >= 0 && value.get<std::int64_t>() <= kMostCount
                                                          : false;
        if (!in_range)
            throw fail(fmt::format("metadata 'training' has {} {}; it must be a whole number from 0 to 10^15", field, value.dump()));
        return static_cast<std::int64_t>(value.get<std::uint64_t>());
    };
    try {
        checkpoint.training.step = count("step");
        const auto& best = training_json.at("best_validation_loss");
        if (!best.is_null() && !(best.is_number() && std::isfinite(best.get<double>()) && best.get<double>() >= 0))
            throw fail(fmt::format("metadata 'training' has best_validation_loss {}; a loss is a finite number of 0 or more, or null",
                                   best.dump()));
        checkpoint.training.best_validation_loss = best.is_null() ? std::numeric_limits<double>::infinity() : best.get<double>();
        checkpoint.training.data_position = static_cast<std::size_t>(count("data_position"));
        checkpoint.training.evaluations_since_best = training_json.contains("evaluations_since_best") ? count("evaluations_since_best") : 0;
        checkpoint.training.best_step = training_json.contains("best_step") ? count("best_step") : 0;
        checkpoint.training.best_validation_characters =
            training_json.contains("best_validation_characters") ? static_cast<std::size_t>(count("best_validation_characters")) : 0;
        checkpoint.training.best_is_averaged = training_json.value("best_is_averaged", false);
        checkpoint.training.rng_state = training_json.at("rng_state").get<std::string>();
        checkpoint.training.options = training_json.at("options");
    } catch (const nlohmann::json::exception&) {
        throw fail("metadata 'training' is incomplete or has the wrong types");
    }

    auto take = [&](const std::string& name, Matrix<float>& into, const std::vector<std::int64_t>& shape) {
        auto found = file.tensors.find(name);
        if (found == file.tensors.end()) throw fail(fmt::format("tensor '{}' is missing", name));
        if (found->second.shape != shape)
            throw fail(fmt::format("tensor '{}' has shape {} but the config needs {}", name,
                                   nlohmann::json(found->second.shape).dump(), nlohmann::json(shape).dump()));
        const auto& values = found->second.values;
        for (std::size_t i = 0; i < values.size(); ++i)
            if (!std::isfinite(values[i]))
                throw fail(fmt::format("tensor '{}' holds a non-finite value at element {}", name, i));
        std::copy(values.begin(), values.end(), into.data());
    };
    // The file must hold the parameters before they are allocated: a few bytes that claim a huge model are refused here.
    if (checkpoint.config.parameter_count() * sizeof(float) > bytes.size())
        throw fail(fmt::format("the config needs {} parameters but the file holds only {} bytes; it is truncated or corrupt",
                               checkpoint.config.parameter_count(), bytes.size()));
    checkpoint.model.emplace(checkpoint.config);
    auto& parameters = checkpoint.model->parameters();
    for (auto& parameter : parameters) take(parameter.name, parameter.value, parameter.shape);

    const bool has_optimizer = file.tensors.count(optimizer_name("exp_avg", parameters.front().name)) > 0;
    if (has_optimizer) {
        Adam optimizer(parameters);
        for (std::size_t i = 0; i < parameters.size(); ++i) {
            take(optimizer_name("exp_avg", parameters[i].name), optimizer.first_moments()[i], parameters[i].shape);
            take(optimizer_name("exp_avg_sq", parameters[i].name), optimizer.second_moments()[i], parameters[i].shape);
        }
        if (!training_json.contains("optimizer_steps")) throw fail("metadata 'training' lacks the optimizer's step count");
        optimizer.set_step_count(count("optimizer_steps"));
        checkpoint.optimizer = std::move(optimizer);
    }
    if (file.tensors.count(average_name(parameters.front().name))) {
        std::vector<Matrix<float>> average;
        for (const auto& parameter : parameters) {
            take(average_name(parameter.name), average.emplace_back(parameter.value.rows(), parameter.value.cols()), parameter.shape);
        }
        checkpoint.average = std::move(average);
    }
    if (file.tensors.count("state.hidden_l0")) {
        const auto batch_size = file.tensors.at("state.hidden_l0").shape.empty() ? 0 : file.tensors.at("state.hidden_l0").shape[0];
        if (batch_size < 1 || batch_size > (1 << 20)) throw fail("tensor 'state.hidden_l0' has an invalid batch size");
        const auto state_bytes = static_cast<std::uint64_t>(batch_size) * static_cast<std::uint64_t>(checkpoint.config.hidden_size) *
                                 static_cast<std::uint64_t>(checkpoint.config.layers) *
                                 (checkpoint.config.has_cell_state() ? 2 : 1) * sizeof(float);
        if (state_bytes > bytes.size()) throw fail("the carried state needs more data than the file holds; it is truncated or corrupt");
        ModelState<float> state = checkpoint.model->initial_state(static_cast<int>(batch_size));
        const std::vector<std::int64_t> shape = {batch_size, checkpoint.config.hidden_size};
        for (std::size_t layer = 0; layer < state.hidden.size(); ++layer) {
            take(fmt::format("state.hidden_l{}", layer), state.hidden[layer], shape);
            if (layer < state.cell.size()) take(fmt::format("state.cell_l{}", layer), state.cell[layer], shape);
        }
        checkpoint.carried_state = std::move(state);
    }
    return checkpoint;
}

nlohmann::json describe_checkpoint(const Checkpoint& checkpoint) {
    nlohmann::json description = checkpoint.config.to_json();
    description["parameters"] = checkpoint.config.parameter_count();
    description["vocabulary"] = encode_utf8(std::u32string(checkpoint.vocab.code_points().begin(), checkpoint.vocab.code_points().end()));
    description["steps_trained"] = checkpoint.training.step;
    description["best_validation_loss"] = std::isfinite(checkpoint.training.best_validation_loss)
                                              ? nlohmann::json(checkpoint.training.best_validation_loss)
                                              : nlohmann::json(nullptr);
    description["resumable"] = checkpoint.optimizer.has_value();
    description["best_is_averaged"] = checkpoint.training.best_is_averaged;
    description["best_step"] = checkpoint.training.best_step > 0 ? nlohmann::json(checkpoint.training.best_step) : nlohmann::json(nullptr);

    // What reproducing the run takes, from the options stored with it. Older checkpoints lack the corpus's
    // size and hash, and a file from elsewhere may hold anything: a value of the wrong kind is shown as
    // unknown (null), never trusted and never an error.
    using json = nlohmann::json;
    const json& options = checkpoint.training.options;
    auto stored = [&](const char* key, bool (*is_kind)(const json&)) {
        if (!options.is_object() || !options.contains(key) || !is_kind(options[key])) return json(nullptr);
        return options[key];
    };
    const auto text = [](const json& value) { return value.is_string(); };
    const auto count = [](const json& value) { return value.is_number_unsigned() || (value.is_number_integer() && value.get<std::int64_t>() >= 0); };
    description["corpus"] = stored("corpus", text);
    description["corpus_size_bytes"] = stored("corpus_size_bytes", count);
    description["corpus_sha256"] = stored("corpus_sha256", text);
    description["validation_file"] = stored("validation_file", text);
    description["validation_file_size_bytes"] = stored("validation_file_size_bytes", count);
    description["validation_file_sha256"] = stored("validation_file_sha256", text);
    description["train_characters"] = stored("train_characters", count);
    // Each step reads seq_length x batch_size characters of the training text.
    const json seq_length = stored("seq_length", count), batch_size = stored("batch_size", count);
    const json train_characters = description["train_characters"];
    description["epochs"] = train_characters.is_null() || seq_length.is_null() || batch_size.is_null() || train_characters == 0
                                ? json(nullptr)
                                : json(static_cast<double>(checkpoint.training.step) * seq_length.get<double>() *
                                       batch_size.get<double>() / train_characters.get<double>());
    // A run started from another's weights (--init-from): that checkpoint, and the step it had reached.
    const json init_from = stored("init_from", [](const json& value) { return value.is_object(); });
    description["init_from"] = init_from.is_object() && init_from.contains("checkpoint") && text(init_from["checkpoint"]) &&
                                       init_from.contains("step") && count(init_from["step"])
                                   ? json{{"checkpoint", init_from["checkpoint"]}, {"step", init_from["step"]}}
                                   : json(nullptr);
    description["training_options"] = options.is_object() ? options : json(nullptr);
    return description;
}

Checkpoint load_checkpoint(const std::filesystem::path& path) {
    std::error_code error;
    if (!std::filesystem::exists(path, error))
        throw Error(fmt::format("{}: no such checkpoint; give a .safetensors file written by 'charlm train'", path.string()));
    if (std::filesystem::is_directory(path, error))
        throw Error(fmt::format("{}: is a directory; give a checkpoint file such as {}", path.string(),
                                (path / "best.safetensors").string()));
    std::ifstream file(path, std::ios::binary);
    if (!file) throw Error(fmt::format("{}: cannot open for reading; check its permissions", path.string()));
    std::string bytes((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
    return parse_checkpoint(bytes, path.string());
}

}  // namespace charlm
