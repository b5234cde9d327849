// charlm generate: the man page and the bash, zsh and fish completions, written from the same CLI11 tables that
// parse the command line, so that neither can fall behind an option. Hidden from --help: `cmake --install` and the
// Debian package run it at build time (docs/building.md); a user who wants one now runs it by hand.
//
// Sections: what an argument is to a shell (the kinds below), the man page, then one writer per shell.
#include <algorithm>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "charlm/error.hpp"
#include "cli/commands.hpp"

namespace charlm::cli {

namespace {

// ---- What an argument is to a shell --------------------------------------------------------------------

// What a shell offers for an argument's value.
enum class ValueKind { none, file, directory, word, choice };

struct Argument {
    std::vector<std::string> flags;  // "--out", "-h"; empty for a positional
    std::string positional;          // its name (CHECKPOINT), for a positional
    std::string value_name;          // TEXT, INT=64, TEXT:{step,minutes}: as --help shows it
    std::string description;
    ValueKind kind = ValueKind::none;
    std::vector<std::string> choices;
};

struct CommandText {
    std::string name, description, usage;
    std::vector<Argument> arguments;
};

// The options and positionals that name a path, by command and name ("*" for every command): a flag's value
// type does not say so (--val is TEXT like --prompt), so it is said here, and tests/test_generate.cpp checks
// that every option whose value name says FILE, PATH, DIR or CHECKPOINT is in this table.
const std::map<std::string, ValueKind>& path_arguments() {
    static const std::map<std::string, ValueKind> table = {
        {"*:CORPUS", ValueKind::file},         {"*:CHECKPOINT", ValueKind::file},    {"*:FILE", ValueKind::file},
        {"*:RUN_DIR", ValueKind::directory},   {"*:--val", ValueKind::file},         {"*:--init-from", ValueKind::file},
        {"*:--prompt-file", ValueKind::file},  {"*:--adapt-to", ValueKind::file},    {"*:--html", ValueKind::file},
        {"*:--output", ValueKind::file},       {"*:--corpus", ValueKind::file},      {"*:--out", ValueKind::directory},
        {"*:--resume", ValueKind::directory},
    };
    return table;
}

// The type name without its default (INT=64 -> INT) and, for a choice (TEXT:{step,minutes}), the choices.
void read_value_name(const std::string& value_name, Argument& argument) {
    const auto brace = value_name.find(":{");
    if (brace != std::string::npos && value_name.back() == '}') {
        std::string list = value_name.substr(brace + 2, value_name.size() - brace - 3);
        for (std::size_t start = 0; start <= list.size();) {
            const std::size_t comma = std::min(list.find(',', start), list.size());
            argument.choices.push_back(list.substr(start, comma - start));
            start = comma + 1;
        }
        argument.kind = ValueKind::choice;
    }
}

Argument describe(const CLI::Option& option, const std::string& command) {
    Argument argument;
    for (const std::string& name : option.get_lnames()) argument.flags.push_back("--" + name);
    for (const std::string& name : option.get_snames()) argument.flags.push_back("-" + name);
    if (argument.flags.empty()) argument.positional = option.get_name(true);
    argument.value_name = option.get_type_name();
    argument.description = option.get_description();
    if (option.get_expected_max() == 0) return argument;  // a flag: no value
    argument.kind = ValueKind::word;
    read_value_name(argument.value_name, argument);
    const std::string key = argument.flags.empty() ? argument.positional : argument.flags.front();
    const auto& paths = path_arguments();
    for (const std::string& scope : {command, std::string("*")})
        if (const auto found = paths.find(scope + ":" + key); found != paths.end()) argument.kind = found->second;
    return argument;
}

// The commands in --help's order, without those it hides (an empty group: this one).
std::vector<CommandText> describe_commands(const CLI::App& app) {
    std::vector<CommandText> commands;
    for (const CLI::App* command : app.get_subcommands([](const CLI::App* each) { return !each->get_group().empty(); })) {
        CommandText text{command->get_name(), command->get_description(), "", {}};
        std::string positionals;
        for (const CLI::Option* option : command->get_options()) {
            text.arguments.push_back(describe(*option, text.name));
            // As --help writes them: a positional that takes several values (serve's checkpoints) ends in "...".
            if (!option->nonpositional()) positionals += " " + option->get_name(true) + (option->get_expected_max() > 1 ? "..." : "");
        }
        text.usage = "charlm " + text.name + " [OPTIONS]" + positionals;
        commands.push_back(std::move(text));
    }
    return commands;
}

// The first clause of a description, for a completion menu: up to a semicolon, or cut at a word near 70 characters.
std::string short_description(const std::string& description) {
    std::string text = description.substr(0, description.find("; "));
    if (text.size() > 70) {
        text.resize(text.rfind(' ', 67));
        text += "...";
    }
    return text;
}

std::string replace_all(std::string text, const std::string& from, const std::string& to) {
    for (std::size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) text.replace(at, from.size(), to);
    return text;
}

// ---- The man page ----------------------------------------------------------------------------------------

// Text safe in roff: backslashes escaped, hyphens as minus signs (so that --out can be searched and copied),
// `code` spans (the descriptions' Markdown) in bold, and no line starting with a control character.
std::string roff(const std::string& text) {
    std::string escaped = replace_all(replace_all(text, "\\", "\\e"), "-", "\\-");
    if (std::count(escaped.begin(), escaped.end(), '`') % 2 == 0) {
        bool open = false;
        for (std::size_t at = escaped.find('`'); at != std::string::npos; at = escaped.find('`', at)) {
            escaped.replace(at, 1, open ? "\\fR" : "\\fB");
            open = !open;
        }
    }
    escaped = replace_all(escaped, "\n", "\n\\&");
    return (escaped.starts_with(".") || escaped.starts_with("'")) ? "\\&" + escaped : escaped;
}

std::string man_page(const CLI::App& app, const std::vector<CommandText>& commands) {
    std::string page = ".TH CHARLM 1 \"\" \"charlm " CHARLM_VERSION "\" \"User Commands\"\n";
    page += ".SH NAME\ncharlm \\- train a character\\-level language model on any text, then sample from it and score it\n";
    page += ".SH SYNOPSIS\n";
    for (const CommandText& command : commands) page += fmt::format(".B {}\n.br\n", roff(command.usage));
    page += ".SH DESCRIPTION\n" + roff(app.get_description()) + "\n";
    page += ".PP\nEach command is below with its options; the README and docs/ (installed under /usr/share/doc/charlm) "
            "explain them at length.\n";
    page += ".SH COMMANDS\n";
    for (const CommandText& command : commands) {
        page += fmt::format(".SS \"{}\"\n{}\n", roff(command.usage), roff(command.description));
        for (const Argument& argument : command.arguments) {
            std::string head;
            if (argument.flags.empty()) {
                head = "\\fI" + roff(argument.positional) + "\\fR";
            } else {
                for (const std::string& flag : argument.flags) head += (head.empty() ? "" : ", ") + std::string("\\fB") + roff(flag) + "\\fR";
                if (argument.kind != ValueKind::none) head += " \\fI" + roff(argument.value_name) + "\\fR";
            }
            page += fmt::format(".TP\n{}\n{}\n", head, roff(argument.description));
        }
    }
    page += ".SH EXIT STATUS\n"
            ".TP\n0\nSuccess (also when the reader of standard output stopped reading, as \\fBhead\\fR does).\n"
            ".TP\n1\nA runtime error: a file that cannot be read or written, a damaged checkpoint, out of memory.\n"
            ".TP\n2\nA usage error: an option or argument that is wrong, missing, contradicted or given twice.\n"
            ".TP\n130\nInterrupted (Ctrl\\-C, SIGTERM), or training's output closed; training saved its checkpoint first.\n";
    page += ".SH ENVIRONMENT\n"
            ".TP\nNO_COLOR\nSet and not empty: the log on standard error has no colour.\n"
            ".TP\nOMP_THREAD_LIMIT, OMP_MAX_ACTIVE_LEVELS, OMP_DYNAMIC\nMay allow fewer threads than \\fB\\-\\-threads\\fR asks "
            "for; charlm then says so and uses what it gets, with the same results.\n";
    page += ".SH FILES\n"
            ".TP\nruns/NAME/\nA training run's directory: last.safetensors (to resume), best.safetensors (the best "
            "validation), metrics.jsonl (progress), and corpus.ids (the encoded text).\n";
    page += ".SH SEE ALSO\n.BR mpirun (1),\n.BR gnuplot (1)\n";
    return page;
}

// ---- bash ------------------------------------------------------------------------------------------------

std::string words(const std::vector<std::string>& list) {
    std::string joined;
    for (const std::string& word : list) joined += (joined.empty() ? "" : " ") + word;
    return joined;
}

std::string bash_completion(const std::vector<CommandText>& commands) {
    std::vector<std::string> names;
    for (const CommandText& command : commands) names.push_back(command.name);
    std::string script = "# bash completion for charlm (written by 'charlm generate bash'; do not edit)\n"
                         "_charlm() {\n"
                         "    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]} command= i\n"
                         "    for ((i = 1; i < COMP_CWORD; i++)); do\n"
                         "        case ${COMP_WORDS[i]} in -*) ;; *) command=${COMP_WORDS[i]}; break ;; esac\n"
                         "    done\n"
                         "    COMPREPLY=()\n"
                         "    if [[ -z $command ]]; then\n"
                         "        mapfile -t COMPREPLY < <(compgen -W \"" + words(names) + " --help --version\" -- \"$cur\")\n"
                         "        return\n"
                         "    fi\n"
                         "    local options= values= files= directories= positional=\n"
                         "    case $command in\n";
    for (const CommandText& command : commands) {
        std::vector<std::string> options, files, directories, values, choice_cases;
        std::string positional = "none";
        for (const Argument& argument : command.arguments) {
            if (argument.flags.empty()) {
                positional = argument.kind == ValueKind::directory ? "directory" : argument.kind == ValueKind::file ? "file" : "word";
                continue;
            }
            options.insert(options.end(), argument.flags.begin(), argument.flags.end());
            if (argument.kind == ValueKind::none) continue;
            std::vector<std::string>& list = argument.kind == ValueKind::file ? files : argument.kind == ValueKind::directory ? directories : values;
            list.insert(list.end(), argument.flags.begin(), argument.flags.end());
            if (argument.kind == ValueKind::choice)
                for (const std::string& flag : argument.flags)
                    choice_cases.push_back(fmt::format("            {}) mapfile -t COMPREPLY < <(compgen -W \"{}\" -- \"$cur\"); return ;;\n", flag, words(argument.choices)));
        }
        script += fmt::format("        {})\n            options=\"{}\" files=\" {} \" directories=\" {} \" values=\" {} \" positional={}\n",
                              command.name, words(options), words(files), words(directories), words(values), positional);
        if (!choice_cases.empty()) {
            script += "            case $prev in\n";
            for (const std::string& line : choice_cases) script += "    " + line;
            script += "            esac\n";
        }
        script += "            ;;\n";
    }
    script += "        *) return ;;\n"
              "    esac\n"
              "    if [[ $files == *\" $prev \"* ]]; then compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -f -- \"$cur\"); return; fi\n"
              "    if [[ $directories == *\" $prev \"* ]]; then compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -d -- \"$cur\"); return; fi\n"
              "    [[ $values == *\" $prev \"* ]] && return  # a number or a word: nothing to offer\n"
              "    if [[ $cur == -* || $positional == none ]]; then\n"
              "        mapfile -t COMPREPLY < <(compgen -W \"$options\" -- \"$cur\")\n"
              "    elif [[ $positional == file ]]; then\n"
              "        compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -f -- \"$cur\")\n"
              "    elif [[ $positional == directory ]]; then\n"
              "        compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -d -- \"$cur\")\n"
              "    fi\n"
              "}\n"
              "complete -F _charlm charlm\n";
    return script;
}

// ---- zsh -------------------------------------------------------------------------------------------------

// Text inside a zsh _arguments description ([...]) within single quotes.
std::string zsh_description(const std::string& description) {
    std::string text = replace_all(short_description(description), "'", "'\\''");
    text = replace_all(replace_all(text, "[", "\\["), "]", "\\]");
    return replace_all(text, ":", "\\:");
}

std::string zsh_action(const Argument& argument) {
    switch (argument.kind) {
        case ValueKind::file: return "_files";
        case ValueKind::directory: return "_files -/";
        case ValueKind::choice: return "(" + words(argument.choices) + ")";
        default: return " ";
    }
}

std::string zsh_completion(const std::vector<CommandText>& commands) {
    std::string script = "#compdef charlm\n# zsh completion for charlm (written by 'charlm generate zsh'; do not edit)\n"
                         "_charlm() {\n"
                         "    local context state state_descr line\n"
                         "    typeset -A opt_args\n"
                         "    _arguments -C '(- *)--help[Print help and exit]' '(- *)--version[Print the version and exit]' \\\n"
                         "        '1:command:->command' '*::argument:->argument'\n"
                         "    case $state in\n"
                         "    command)\n"
                         "        local -a commands=(\n";
    for (const CommandText& command : commands)
        script += fmt::format("            '{}:{}'\n", command.name, replace_all(replace_all(short_description(command.description), "'", "'\\''"), ":", "\\:"));
    script += "        )\n        _describe -t commands 'charlm command' commands ;;\n"
              "    argument)\n        case $words[1] in\n";
    for (const CommandText& command : commands) {
        script += fmt::format("        {})\n            _arguments", command.name);
        int position = 0;
        for (const Argument& argument : command.arguments) {
            const std::string description = zsh_description(argument.description);
            if (argument.flags.empty()) {
                script += fmt::format(" \\\n                '{}:{}:{}'", ++position, replace_all(argument.positional, ":", ""), zsh_action(argument));
                continue;
            }
            const std::string exclusive = argument.flags.size() > 1 ? "(" + words(argument.flags) + ")" : "";
            const std::string flags = argument.flags.size() > 1 ? "{" + replace_all(words(argument.flags), " ", ",") + "}" : argument.flags.front();
            const std::string value = argument.kind == ValueKind::none ? "" : ":" + replace_all(argument.value_name, ":", "") + ":" + zsh_action(argument);
            const std::string equals = argument.kind == ValueKind::none || argument.flags.size() > 1 ? "" : "=";
            if (argument.flags.size() > 1)
                script += fmt::format(" \\\n                '{}'{}'[{}]{}'", exclusive, flags, description, value);
            else
                script += fmt::format(" \\\n                '{}{}[{}]{}'", flags, equals, description, value);
        }
        script += " ;;\n";
    }
    script += "        esac ;;\n    esac\n}\n_charlm \"$@\"\n";
    return script;
}

// ---- fish ------------------------------------------------------------------------------------------------

std::string fish_quote(const std::string& text) { return "'" + replace_all(replace_all(text, "\\", "\\\\"), "'", "\\'") + "'"; }

std::string fish_completion(const std::vector<CommandText>& commands) {
    std::string script = "# fish completion for charlm (written by 'charlm generate fish'; do not edit)\n"
                         "complete -c charlm -f\n"
                         "complete -c charlm -n __fish_use_subcommand -l help -d 'Print help and exit'\n"
                         "complete -c charlm -n __fish_use_subcommand -l version -d 'Print the version and exit'\n";
    for (const CommandText& command : commands)
        script += fmt::format("complete -c charlm -n __fish_use_subcommand -a {} -d {}\n", command.name, fish_quote(short_description(command.description)));
    for (const CommandText& command : commands) {
        const std::string condition = fish_quote("__fish_seen_subcommand_from " + command.name);
        for (const Argument& argument : command.arguments) {
            std::string line = "complete -c charlm -n " + condition;
            if (argument.flags.empty()) {
                if (argument.kind == ValueKind::file) script += line + " -F\n";
                if (argument.kind == ValueKind::directory) script += line + " -a '(__fish_complete_directories)'\n";
                continue;
            }
            for (const std::string& flag : argument.flags) line += (flag.starts_with("--") ? " -l " + flag.substr(2) : " -s " + flag.substr(1));
            switch (argument.kind) {
                case ValueKind::none: break;
                case ValueKind::file: line += " -r -F"; break;
                case ValueKind::directory: line += " -x -a '(__fish_complete_directories)'"; break;
                case ValueKind::choice: line += " -x -a " + fish_quote(words(argument.choices)); break;
                case ValueKind::word: line += " -x"; break;
            }
            script += line + " -d " + fish_quote(short_description(argument.description)) + "\n";
        }
    }
    return script;
}

}  // namespace

std::string generate_text(const CLI::App& app, const std::string& what) {
    const std::vector<CommandText> commands = describe_commands(app);
    if (what == "man") return man_page(app, commands);
    if (what == "bash") return bash_completion(commands);
    if (what == "zsh") return zsh_completion(commands);
    if (what == "fish") return fish_completion(commands);
    throw UsageError(fmt::format("charlm generate writes man, bash, zsh or fish, not '{}'", what));
}

std::vector<std::string> arguments_naming_paths(const CLI::App& app) {
    std::vector<std::string> names;
    for (const CommandText& command : describe_commands(app))
        for (const Argument& argument : command.arguments)
            if (argument.kind == ValueKind::file || argument.kind == ValueKind::directory)
                names.push_back(command.name + " " + (argument.flags.empty() ? argument.positional : argument.flags.front()));
    return names;
}

Command add_generate_command(CLI::App& app) {
    const auto what = std::make_shared<std::string>();
    auto* generate = app.add_subcommand("generate", "Write the man page or a shell's completions to standard output");
    generate->group("");  // for packagers and cmake --install, not for --help
    generate->add_option("WHAT", *what, "man, bash, zsh or fish")->required();
    return {generate, [what, &app](const Communicator&) {
                fmt::print("{}", generate_text(app, *what));
                return 0;
            }};
}

}  // namespace charlm::cli
