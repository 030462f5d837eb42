// Opens the LibTorch plugin on first use (see training_api.h).
#include <dlfcn.h>

#include <cstdlib>
#include <filesystem>
#include <mutex>

#include "train/training_api.h"

namespace sparrow {

namespace {

// Candidates in order: $SPARROW_TRAINING_LIB, next to the running executable, next to the shared
// object this loader is linked into (the Python package's extension module), the build tree.
std::vector<std::string> candidates() {
  std::vector<std::string> paths;
  if (const char* env = std::getenv("SPARROW_TRAINING_LIB")) paths.emplace_back(env);
  std::error_code ec;
  auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) paths.push_back((exe.parent_path() / "libsparrow_training.so").string());
  Dl_info self{};
  if (dladdr(reinterpret_cast<void*>(&candidates), &self) != 0 && self.dli_fname != nullptr) {
    auto beside = std::filesystem::path(self.dli_fname).parent_path() / "libsparrow_training.so";
    if (paths.empty() || beside.string() != paths.back()) paths.push_back(beside.string());
  }
#ifdef SPARROW_TRAINING_LIB_BUILD_PATH
  paths.emplace_back(SPARROW_TRAINING_LIB_BUILD_PATH);
#endif
  return paths;
}

Result<const TrainingApi*> load() {
  static std::mutex mutex;
  static const TrainingApi* api = nullptr;
  static std::string error;
  std::lock_guard lock(mutex);
  if (api) return api;
  std::string tried;
  for (const auto& path : candidates()) {
    if (!std::filesystem::exists(path)) {
      tried += "\n  " + path + " (missing)";
      continue;
    }
    void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
      tried += "\n  " + path + ": " + dlerror();
      continue;
    }
    auto entry = reinterpret_cast<const TrainingApi* (*)()>(dlsym(handle, "sparrow_training_api"));
    if (!entry) {
      tried += "\n  " + path + ": no sparrow_training_api";
      continue;
    }
    api = entry();
    return api;
  }
#ifndef SPARROW_TRAINING_LIB_BUILD_PATH
  tried += "\n  (this build has no training: configure with -DSPARROW_WITH_TRAINING=ON)";
#endif
  return errorf("training needs the LibTorch plugin libsparrow_training.so, not found:{}", tried);
}

}  // namespace

Result<std::vector<EpochReport>> train_model(Model& model, const LabeledData& train, const LabeledData* val,
                                             const TrainOptions& options,
                                             const std::map<std::string, Tensor>* masks) {
  SP_ASSIGN_OR_RETURN(const TrainingApi* api, load());
  return api->train_model(model, train, val, options, masks);
}

Result<std::vector<EpochReport>> finetune_codebooks(SpwModel& spw, const LabeledData& train,
                                                    const LabeledData* val, const TrainOptions& options) {
  SP_ASSIGN_OR_RETURN(const TrainingApi* api, load());
  return api->finetune_codebooks(spw, train, val, options);
}

}  // namespace sparrow
