// sparrow digits DIR: writes the synthetic MNIST-shaped dataset (IDX files with MNIST's names), so
// `train`, `compress --data` and `repro` run on machines without MNIST.
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "sparrow/train.h"

namespace sparrow::cli {

Command add_digits(CLI::App& app, const GlobalOptions& global) {
  struct Args {
    std::string dir;
    SyntheticDigitsOptions options;
    bool json = false;
  };
  auto a = std::make_shared<Args>();
  auto* cmd =
      app.add_subcommand("digits", "Write a synthetic MNIST-shaped dataset (IDX files) into a directory");
  cmd->add_option("dir", a->dir, "Output directory (created if missing)")->required();
  cmd->add_option("--train", a->options.train, "Training images (default 20000)");
  cmd->add_option("--test", a->options.test, "Test images (default 2000)");
  cmd->add_option("--seed", a->options.seed, "Seed (the same seed writes the same files)");
  cmd->add_flag("--json", a->json, "Print one JSON object: the directory, its files and image counts");
  return {cmd, [a, &global]() {
            if (auto s = write_synthetic_digits(a->dir, a->options); !s.ok()) return report_error(s);
            if (a->json) {
              nlohmann::json files = nlohmann::json::array();
              for (const char* f : {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                                    "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"})
                files.push_back(a->dir + "/" + f);
              fmt::print("{}\n", nlohmann::json{{"directory", a->dir},
                                                {"train", a->options.train},
                                                {"test", a->options.test},
                                                {"seed", a->options.seed},
                                                {"files", files}}
                                     .dump(2));
            } else if (!global.quiet)
              fmt::print("synthetic digits: {} training and {} test images in {}\n", a->options.train,
                         a->options.test, a->dir);
            return 0;
          }};
}

}  // namespace sparrow::cli
