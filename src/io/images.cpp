// Image files (PNG through libpng, JPEG through libjpeg) and folders of them, one sub-folder per
// class, as model inputs.
// jpeglib.h uses size_t and FILE without including their headers.
#include <cstddef>
#include <cstdio>

#include <jpeglib.h>
#include <png.h>

#include <algorithm>
#include <cctype>
#include <csetjmp>
#include <cstring>
#include <filesystem>
#include <functional>

#include "core/file.h"
#include "sparrow/dataset.h"

namespace sparrow {

namespace {

namespace fs = std::filesystem;

bool has_png_signature(const std::vector<char>& bytes) {
  return bytes.size() >= 8 && png_sig_cmp(reinterpret_cast<png_const_bytep>(bytes.data()), 0, 8) == 0;
}

bool has_jpeg_signature(const std::vector<char>& bytes) {
  return bytes.size() >= 3 && static_cast<unsigned char>(bytes[0]) == 0xFF &&
         static_cast<unsigned char>(bytes[1]) == 0xD8 && static_cast<unsigned char>(bytes[2]) == 0xFF;
}

// libpng's simplified API: any PNG (palette, 16-bit, alpha) to 8-bit gray or RGB, alpha dropped
// over black.
Result<DecodedImage> decode_png(const std::vector<char>& bytes) {
  png_image image;
  std::memset(&image, 0, sizeof image);
  image.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&image, bytes.data(), bytes.size()))
    return errorf("PNG: {}", image.message);
  const bool gray = (image.format & PNG_FORMAT_FLAG_COLOR) == 0;
  image.format = gray ? PNG_FORMAT_GRAY : PNG_FORMAT_RGB;
  if (static_cast<double>(PNG_IMAGE_SIZE(image)) > static_cast<double>(input_byte_limit())) {
    png_image_free(&image);
    return errorf("PNG: {} x {} pixels need more than the input budget of {} bytes (--max-input)",
                  image.width, image.height, input_byte_limit());
  }
  DecodedImage out;
  out.width = image.width;
  out.height = image.height;
  out.channels = gray ? 1 : 3;
  out.pixels.resize(PNG_IMAGE_SIZE(image));
  const png_color black = {0, 0, 0};
  if (!png_image_finish_read(&image, &black, out.pixels.data(), 0, nullptr)) {
    std::string message = image.message;
    png_image_free(&image);
    return errorf("PNG: {}", message);
  }
  return out;
}

// libjpeg reports errors through a callback that must not return: it jumps back here.
struct JpegError {
  jpeg_error_mgr manager;
  std::jmp_buf back;
  char message[JMSG_LENGTH_MAX];
};

void jpeg_fail(j_common_ptr info) {
  auto* error = reinterpret_cast<JpegError*>(info->err);
  (*info->err->format_message)(info, error->message);
  std::longjmp(error->back, 1);
}

// Warnings (corrupt or truncated image data, which libjpeg would fill with gray) fail too; trace
// messages (level >= 0) are ignored.
void jpeg_message(j_common_ptr info, int level) {
  if (level < 0) jpeg_fail(info);
}

// Decodes into `out`; false with `error.message` set on failure. No C++ object with a destructor
// lives across the setjmp.
bool decode_jpeg_into(const std::vector<char>& bytes, DecodedImage& out, JpegError& error) {
  jpeg_decompress_struct info;
  info.err = jpeg_std_error(&error.manager);
  error.manager.error_exit = jpeg_fail;
  error.manager.emit_message = jpeg_message;
  if (setjmp(error.back)) {
    jpeg_destroy_decompress(&info);
    return false;
  }
  jpeg_create_decompress(&info);
  jpeg_mem_src(&info, reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size());
  jpeg_read_header(&info, TRUE);
  info.out_color_space = info.jpeg_color_space == JCS_GRAYSCALE ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_calc_output_dimensions(&info);
  if (static_cast<double>(info.output_width) * info.output_height * info.output_components >
      static_cast<double>(input_byte_limit())) {
    std::snprintf(error.message, sizeof error.message,
                  "%u x %u pixels need more than the input budget (--max-input)", info.output_width,
                  info.output_height);
    jpeg_destroy_decompress(&info);
    return false;
  }
  jpeg_start_decompress(&info);
  out.width = info.output_width;
  out.height = info.output_height;
  out.channels = info.output_components;
  out.pixels.resize(static_cast<size_t>(out.width) * out.height * static_cast<size_t>(out.channels));
  while (info.output_scanline < info.output_height) {
    unsigned char* row =
        out.pixels.data() + static_cast<size_t>(info.output_scanline) * out.width * out.channels;
    jpeg_read_scanlines(&info, &row, 1);
  }
  jpeg_finish_decompress(&info);
  jpeg_destroy_decompress(&info);
  return true;
}

Result<DecodedImage> decode_jpeg(const std::vector<char>& bytes) {
  DecodedImage out;
  JpegError error;
  if (!decode_jpeg_into(bytes, out, error)) return errorf("JPEG: {}", error.message);
  return out;
}

// The value of channel `c` (of `want` channels) at pixel (y, x): gray replicated to RGB, RGB
// averaged to gray with ITU-R BT.601's weights.
float channel_value(const DecodedImage& image, int64_t y, int64_t x, int64_t c, int64_t want) {
  const unsigned char* p =
      image.pixels.data() +
      (static_cast<size_t>(y) * image.width + static_cast<size_t>(x)) * static_cast<size_t>(image.channels);
  if (image.channels == want) return p[c];
  if (image.channels == 1) return p[0];
  return 0.299f * p[0] + 0.587f * p[1] + 0.114f * p[2];
}

const char* const kImageExtensions[] = {".png", ".jpg", ".jpeg"};  // compared in lower case

// Each class's image files, classes and files sorted by name.
Result<std::vector<std::vector<std::string>>> list_classes(const std::string& dir,
                                                           std::vector<std::string>& class_names) {
  std::error_code ec;
  std::vector<fs::path> classes;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
    if (it->is_directory(ec)) classes.push_back(it->path());
  if (ec) return errorf("{}: {}", dir, ec.message());
  std::sort(classes.begin(), classes.end());
  std::vector<std::vector<std::string>> files;
  for (const fs::path& c : classes) {
    std::vector<std::string> images;
    for (fs::directory_iterator it(c, ec), end; !ec && it != end; it.increment(ec))
      if (it->is_regular_file(ec) && is_image_file(it->path().string()))
        images.push_back(it->path().string());
    if (ec) return errorf("{}: {}", c.string(), ec.message());
    std::sort(images.begin(), images.end());
    class_names.push_back(c.filename().string());
    files.push_back(std::move(images));
  }
  if (files.empty())
    return errorf("{}: no class folders (an image folder holds one sub-folder per class)", dir);
  return files;
}

}  // namespace

bool is_image_file(const std::string& path) {
  std::string extension = fs::path(path).extension().string();
  std::transform(extension.begin(), extension.end(), extension.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return std::find(std::begin(kImageExtensions), std::end(kImageExtensions), extension) !=
         std::end(kImageExtensions);
}

Result<DecodedImage> decode_image(const std::string& path) {
  SP_ASSIGN_OR_RETURN(std::vector<char> bytes, read_file(path));
  Result<DecodedImage> image = has_png_signature(bytes)    ? decode_png(bytes)
                               : has_jpeg_signature(bytes) ? decode_jpeg(bytes)
                                                           : errorf("neither a PNG nor a JPEG file");
  if (!image.ok()) return image.status().prefixed(path);
  if (image->width == 0 || image->height == 0) return errorf("{}: the image is empty", path);
  return image;
}

void resize_center_crop(const DecodedImage& image, int64_t channels, int64_t height, int64_t width,
                        float* out, int64_t shorter_side) {
  // The scale that makes the image cover height x width (or its shorter side shorter_side), then the
  // centered window of that size.
  const double scale =
      shorter_side > 0
          ? static_cast<double>(shorter_side) / std::min(image.height, image.width)
          : std::max(static_cast<double>(height) / image.height, static_cast<double>(width) / image.width);
  const double off_y = (image.height * scale - height) / 2, off_x = (image.width * scale - width) / 2;
  for (int64_t c = 0; c < channels; ++c)
    for (int64_t y = 0; y < height; ++y) {
      // Pixel centers: output (y + 0.5) maps to source (y + 0.5 + off) / scale - 0.5, clamped.
      const double sy = std::clamp((y + 0.5 + off_y) / scale - 0.5, 0.0, image.height - 1.0);
      const auto y0 = static_cast<int64_t>(sy);
      const int64_t y1 = std::min<int64_t>(y0 + 1, image.height - 1);
      const auto fy = static_cast<float>(sy - static_cast<double>(y0));
      for (int64_t x = 0; x < width; ++x) {
        const double sx = std::clamp((x + 0.5 + off_x) / scale - 0.5, 0.0, image.width - 1.0);
        const auto x0 = static_cast<int64_t>(sx);
        const int64_t x1 = std::min<int64_t>(x0 + 1, image.width - 1);
        const auto fx = static_cast<float>(sx - static_cast<double>(x0));
        const float top = channel_value(image, y0, x0, c, channels) * (1 - fx) +
                          channel_value(image, y0, x1, c, channels) * fx;
        const float bottom = channel_value(image, y1, x0, c, channels) * (1 - fx) +
                             channel_value(image, y1, x1, c, channels) * fx;
        out[(c * height + y) * width + x] = top * (1 - fy) + bottom * fy;
      }
    }
}

Result<FolderImages> list_folder_images(const std::string& dir, int64_t limit) {
  FolderImages out;
  SP_ASSIGN_OR_RETURN(auto files, list_classes(dir, out.class_names));
  // Round-robin over the classes, so any run of rows (the held-out last ones) mixes them.
  for (size_t i = 0;; ++i) {
    bool any = false;
    for (size_t c = 0; c < files.size(); ++c)
      if (i < files[c].size()) {
        out.files.emplace_back(files[c][i], static_cast<int64_t>(c));
        any = true;
      }
    if (!any) break;
  }
  if (out.files.empty()) return errorf("{}: no PNG or JPEG files in its class folders", dir);
  if (limit > 0 && static_cast<int64_t>(out.files.size()) > limit)
    out.files.resize(static_cast<size_t>(limit));
  return out;
}

Status for_each_folder_image(const std::string& dir, const FolderImages& images, int64_t channels,
                             int64_t height, int64_t width, int64_t shorter_side,
                             const std::function<Status(int64_t)>& start,
                             const std::function<Status(int64_t, int64_t, const float*)>& each) {
  if (channels != 1 && channels != 3)
    return errorf("{}: images become 1 (gray) or 3 (RGB) channels, the model's input has {}", dir, channels);
  if (shorter_side > 0 && (shorter_side < height || shorter_side < width))
    return errorf("{}: a shorter side of {} (--resize) cannot cover the {} x {} input", dir, shorter_side,
                  height, width);
  const int64_t n = static_cast<int64_t>(images.files.size());
  SP_RETURN_IF_ERROR(start(n));
  std::vector<float> pixels(static_cast<size_t>(channels * height * width));
  for (int64_t i = 0; i < n; ++i) {
    const auto& [path, label] = images.files[static_cast<size_t>(i)];
    SP_ASSIGN_OR_RETURN(DecodedImage image, decode_image(path));
    resize_center_crop(image, channels, height, width, pixels.data(), shorter_side);
    SP_RETURN_IF_ERROR(each(i, label, pixels.data()));
  }
  return {};
}

Result<ImageSet> read_image_folder(const std::string& dir, int64_t channels, int64_t height, int64_t width,
                                   int64_t limit, std::vector<std::string>* class_names,
                                   int64_t shorter_side) {
  if (channels != 1 && channels != 3)
    return errorf("{}: images become 1 (gray) or 3 (RGB) channels, the model's input has {}", dir, channels);
  SP_ASSIGN_OR_RETURN(FolderImages images, list_folder_images(dir, limit));
  ImageSet set;
  const int64_t per_image = channels * height * width;
  SP_RETURN_IF_ERROR(for_each_folder_image(
      dir, images, channels, height, width, shorter_side,
      [&](int64_t n) {
        set.images = Tensor(DType::f32, {n, channels, height, width});
        return Status{};
      },
      [&](int64_t row, int64_t label, const float* pixels) {
        std::copy(pixels, pixels + per_image, set.images.f32_data() + row * per_image);
        set.labels.push_back(label);
        return Status{};
      }));
  if (class_names) *class_names = std::move(images.class_names);
  return set;
}

}  // namespace sparrow
