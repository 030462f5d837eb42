// Image files and folders as datasets (include/sparrow/dataset.h): PNG and JPEG decoding, resizing
// and center cropping, class folders.
#include <cstddef>
#include <cstdio>

#include <jpeglib.h>
#include <png.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "core/file.h"
#include "sparrow/dataset.h"
#include "test_util.h"

namespace sparrow {
namespace {

namespace fs = std::filesystem;

// Writes 8-bit pixels (rows top first, channels together) as a PNG: 1 gray, 2 gray + alpha, 3 RGB,
// 4 RGBA.
void write_png(const std::string& path, uint32_t width, uint32_t height, int channels,
               const std::vector<unsigned char>& pixels) {
  png_image image;
  std::memset(&image, 0, sizeof image);
  image.version = PNG_IMAGE_VERSION;
  image.width = width;
  image.height = height;
  const png_uint_32 formats[] = {PNG_FORMAT_GRAY, PNG_FORMAT_GA, PNG_FORMAT_RGB, PNG_FORMAT_RGBA};
  image.format = formats[channels - 1];
  ASSERT_TRUE(png_image_write_to_file(&image, path.c_str(), 0, pixels.data(), 0, nullptr)) << image.message;
}

void write_jpeg(const std::string& path, uint32_t width, uint32_t height, int channels,
                const std::vector<unsigned char>& pixels) {
  jpeg_compress_struct info;
  jpeg_error_mgr error;
  info.err = jpeg_std_error(&error);
  jpeg_create_compress(&info);
  FILE* file = std::fopen(path.c_str(), "wb");
  ASSERT_NE(file, nullptr);
  jpeg_stdio_dest(&info, file);
  info.image_width = width;
  info.image_height = height;
  info.input_components = channels;
  info.in_color_space = channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_set_defaults(&info);
  jpeg_set_quality(&info, 100, TRUE);
  jpeg_start_compress(&info, TRUE);
  while (info.next_scanline < height) {
    auto* row = const_cast<unsigned char*>(pixels.data() + info.next_scanline * width * channels);
    jpeg_write_scanlines(&info, &row, 1);
  }
  jpeg_finish_compress(&info);
  jpeg_destroy_compress(&info);
  std::fclose(file);
}

std::vector<unsigned char> pattern(size_t n, unsigned seed) {
  std::vector<unsigned char> p(n);
  for (size_t i = 0; i < n; ++i) p[i] = static_cast<unsigned char>((i * 73 + seed * 29) % 256);
  return p;
}

// With alpha, even pixels are opaque and odd ones transparent: composed over black, the first keep
// their value, the others become 0.
TEST(Images, PngDecodesEveryChannelLayoutExactly) {
  const std::string dir = test::temp_dir("png");
  for (int channels : {1, 2, 3, 4}) {
    std::vector<unsigned char> pixels = pattern(5 * 3 * static_cast<size_t>(channels), channels);
    const bool alpha = channels % 2 == 0;
    if (alpha)
      for (size_t p = 0; p < 15; ++p) pixels[p * channels + channels - 1] = p % 2 == 0 ? 255 : 0;
    const std::string path = dir + "/c" + std::to_string(channels) + ".png";
    write_png(path, 5, 3, channels, pixels);
    auto image = decode_image(path);
    ASSERT_TRUE(image.ok()) << image.status().message();
    EXPECT_EQ(image->width, 5u);
    EXPECT_EQ(image->height, 3u);
    const int color = channels >= 3 ? 3 : 1;
    ASSERT_EQ(image->channels, color) << "alpha is dropped";
    for (size_t p = 0; p < 15; ++p)
      for (int c = 0; c < color; ++c) {
        const unsigned char want = alpha && p % 2 == 1 ? 0 : pixels[p * channels + c];
        EXPECT_EQ(image->pixels[p * color + c], want) << channels << " channels, pixel " << p;
      }
  }
}

TEST(Images, JpegDecodesGrayAndColorClosely) {
  const std::string dir = test::temp_dir("jpeg");
  for (int channels : {1, 3}) {
    std::vector<unsigned char> pixels(16 * 16 * static_cast<size_t>(channels), 0);
    for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<unsigned char>(60 + (i % 3) * 50);
    if (channels == 1) std::fill(pixels.begin(), pixels.end(), 128);
    const std::string path = dir + "/c" + std::to_string(channels) + ".jpg";
    write_jpeg(path, 16, 16, channels, pixels);
    auto image = decode_image(path);
    ASSERT_TRUE(image.ok()) << image.status().message();
    EXPECT_EQ(image->channels, channels);
    double worst = 0;
    for (size_t i = 0; i < pixels.size(); ++i)
      worst = std::max(worst, std::abs(double(image->pixels[i]) - pixels[i]));
    EXPECT_LE(worst, 4.0) << "quality 100 of flat colors";
  }
}

TEST(Images, BadFilesNameTheFile) {
  const std::string dir = test::temp_dir("image_bad");
  write_png(dir + "/good.png", 8, 8, 3, pattern(8 * 8 * 3, 1));
  std::ifstream in(dir + "/good.png", std::ios::binary);
  const std::string good((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  for (size_t cut : {size_t{8}, size_t{30}, good.size() / 2, good.size() - 13}) {
    std::ofstream(dir + "/cut.png", std::ios::binary) << good.substr(0, cut);
    auto r = decode_image(dir + "/cut.png");
    ASSERT_FALSE(r.ok()) << "cut at " << cut;
    EXPECT_NE(r.status().message().find(dir + "/cut.png: PNG"), std::string::npos) << r.status().message();
  }
  write_jpeg(dir + "/good.jpg", 16, 16, 3, pattern(16 * 16 * 3, 2));
  std::ifstream jin(dir + "/good.jpg", std::ios::binary);
  const std::string jpeg((std::istreambuf_iterator<char>(jin)), std::istreambuf_iterator<char>());
  for (size_t cut : {size_t{40}, jpeg.size() * 2 / 3}) {  // in the header, in the image data
    std::ofstream(dir + "/cut.jpg", std::ios::binary) << jpeg.substr(0, cut);
    auto j = decode_image(dir + "/cut.jpg");
    ASSERT_FALSE(j.ok()) << "cut at " << cut << " of " << jpeg.size();
    EXPECT_NE(j.status().message().find(dir + "/cut.jpg: JPEG"), std::string::npos) << j.status().message();
  }
  // Pixels beyond the input budget are refused before they are allocated.
  write_png(dir + "/flat.png", 64, 64, 3, std::vector<unsigned char>(64 * 64 * 3, 90));
  write_jpeg(dir + "/flat.jpg", 64, 64, 3, std::vector<unsigned char>(64 * 64 * 3, 90));
  const int64_t budget = input_byte_limit();
  set_input_byte_limit(4000);
  for (const char* name : {"/flat.png", "/flat.jpg"}) {
    auto big = decode_image(dir + name);
    ASSERT_FALSE(big.ok()) << name;
    EXPECT_NE(big.status().message().find("64 x 64 pixels need more than the input budget"),
              std::string::npos)
        << big.status().message();
  }
  set_input_byte_limit(budget);
  std::ofstream(dir + "/text.png") << "hello";
  EXPECT_NE(decode_image(dir + "/text.png").status().message().find("neither a PNG nor a JPEG"),
            std::string::npos);
}

TEST(Images, ResizeKeepsSameSizeExactlyAndCropsTheCenter) {
  DecodedImage image;
  image.width = 8;
  image.height = 4;
  image.channels = 3;
  image.pixels = pattern(8 * 4 * 3, 5);
  auto at = [&](int64_t y, int64_t x, int64_t c) { return float(image.pixels[(y * 8 + x) * 3 + c]); };
  std::vector<float> same(3 * 4 * 8);
  resize_center_crop(image, 3, 4, 8, same.data());
  for (int64_t c = 0; c < 3; ++c)
    for (int64_t y = 0; y < 4; ++y)
      for (int64_t x = 0; x < 8; ++x) ASSERT_EQ(same[(c * 4 + y) * 8 + x], at(y, x, c)) << "same size: exact";
  std::vector<float> square(3 * 4 * 4);
  resize_center_crop(image, 3, 4, 4, square.data());
  for (int64_t c = 0; c < 3; ++c)
    for (int64_t y = 0; y < 4; ++y)
      for (int64_t x = 0; x < 4; ++x)
        ASSERT_EQ(square[(c * 4 + y) * 4 + x], at(y, x + 2, c)) << "the middle four columns";
  std::vector<float> gray(2 * 4);
  resize_center_crop(image, 1, 2, 4, gray.data());  // half size: each output the mean of a 2 x 2 block
  for (int64_t y = 0; y < 2; ++y)
    for (int64_t x = 0; x < 4; ++x) {
      double want = 0;
      for (int64_t dy = 0; dy < 2; ++dy)
        for (int64_t dx = 0; dx < 2; ++dx)
          want += (0.299 * at(2 * y + dy, 2 * x + dx, 0) + 0.587 * at(2 * y + dy, 2 * x + dx, 1) +
                   0.114 * at(2 * y + dy, 2 * x + dx, 2)) /
                  4;
      EXPECT_NEAR(gray[y * 4 + x], want, 1e-3) << y << "," << x;
    }
  // Resize(4) + CenterCrop(2) keeps the 8 x 4 image's size: the middle 2 x 2 pixels, exactly.
  std::vector<float> middle(3 * 2 * 2), cover(3 * 2 * 2), half(3 * 2 * 2);
  resize_center_crop(image, 3, 2, 2, middle.data(), 4);
  for (int64_t c = 0; c < 3; ++c)
    for (int64_t y = 0; y < 2; ++y)
      for (int64_t x = 0; x < 2; ++x)
        ASSERT_EQ(middle[(c * 2 + y) * 2 + x], at(y + 1, x + 3, c)) << "the shorter side stays 4";
  resize_center_crop(image, 3, 2, 2, cover.data());
  resize_center_crop(image, 3, 2, 2, half.data(), 2);
  EXPECT_EQ(cover, half) << "a shorter side of the window's size is the covering scale";
  EXPECT_NE(cover, middle);
  DecodedImage one{1, 1, 1, {200}};
  std::vector<float> up(3 * 5 * 5);
  resize_center_crop(one, 3, 5, 5, up.data());
  for (float v : up) EXPECT_EQ(v, 200.0f) << "one gray pixel covers everything, in every channel";
}

TEST(Images, FoldersNumberClassesByNameAndTakeThemInTurn) {
  const std::string dir = test::temp_dir("image_folder");
  for (const char* c : {"cat", "ant", "bee"}) fs::create_directories(dir + "/" + c);
  write_png(dir + "/ant/1.png", 4, 4, 1, std::vector<unsigned char>(16, 10));
  write_png(dir + "/ant/2.png", 4, 4, 1, std::vector<unsigned char>(16, 11));
  write_png(dir + "/ant/3.png", 4, 4, 1, std::vector<unsigned char>(16, 12));
  write_png(dir + "/bee/a.png", 4, 4, 3, std::vector<unsigned char>(48, 20));
  write_jpeg(dir + "/cat/z.jpg", 4, 4, 1, std::vector<unsigned char>(16, 128));
  std::ofstream(dir + "/cat/notes.txt") << "not an image";
  std::vector<std::string> names;
  auto set = read_image_folder(dir, 1, 4, 4, 0, &names);
  ASSERT_TRUE(set.ok()) << set.status().message();
  EXPECT_EQ(names, (std::vector<std::string>{"ant", "bee", "cat"}));
  EXPECT_EQ(set->labels, (std::vector<int64_t>{0, 1, 2, 0, 0})) << "ant, bee, cat, then the rest of ant";
  EXPECT_EQ(set->images.shape(), (Shape{5, 1, 4, 4}));
  EXPECT_EQ(set->images.f32_data()[0], 10.0f);
  EXPECT_EQ(set->images.f32_data()[16], 20.0f) << "RGB to gray: equal channels stay";
  EXPECT_NEAR(set->images.f32_data()[32], 128.0f, 2.0f);
  EXPECT_EQ(set->images.f32_data()[48], 11.0f);
  auto three = read_image_folder(dir, 3, 2, 2, 3);
  ASSERT_TRUE(three.ok());
  EXPECT_EQ(three->images.shape(), (Shape{3, 3, 2, 2}));
  std::ofstream(dir + "/bee/broken.png") << "\x89PNG\r\n\x1a\n...";
  auto broken = read_image_folder(dir, 1, 4, 4);
  ASSERT_FALSE(broken.ok());
  EXPECT_NE(broken.status().message().find("bee/broken.png"), std::string::npos) << broken.status().message();
  const std::string empty = test::temp_dir("image_folder_empty");
  EXPECT_NE(read_image_folder(empty, 1, 4, 4).status().message().find("no class folders"), std::string::npos);
  fs::create_directories(empty + "/only");
  EXPECT_NE(read_image_folder(empty, 1, 4, 4).status().message().find("no PNG or JPEG files"),
            std::string::npos);
  EXPECT_NE(read_image_folder(dir, 1, 4, 4, 0, nullptr, 3)
                .status()
                .message()
                .find("a shorter side of 3 (--resize) cannot cover the 4 x 4 input"),
            std::string::npos);
  EXPECT_NE(read_image_folder(dir, 2, 4, 4).status().message().find("1 (gray) or 3 (RGB)"),
            std::string::npos);
}

}  // namespace
}  // namespace sparrow
