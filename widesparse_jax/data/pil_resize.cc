// WidesparsePilResize: Pillow's BILINEAR resize of a uint8 image, bit for bit, as a TensorFlow op.
//
// torchvision's Resize / RandomResizedCrop on PIL images (the baseline's preprocessing) call
// Pillow's resample: a separable triangle filter stretched by the downscale factor
// (antialiased), taps in 22-bit fixed point, two 1-D passes with the intermediate image
// rounded to uint8. This op computes the same numbers (same taps, same integer arithmetic,
// same pass order), so its output equals PIL's exactly (tests/test_imagenet_fidelity.py).
//
// image: uint8 [height, width, channels]; size: int32 [2] = (out_height, out_width).
// Output: uint8 [out_height, out_width, channels].
// Pass order: Pillow >= 13 runs the vertical pass first when the height shrinks by more than
// twice as many pixels as the width does; older Pillow always runs the horizontal pass
// first (attr legacy_pass_order). The two orders differ by at most 1 in some pixels.
// Built on first use by widesparse_jax/data/pil_resize.py.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace {

constexpr int kFractionBits = 22;  // fixed-point bits of a tap weight
constexpr int32_t kHalf = 1 << (kFractionBits - 1);

// The taps of one 1-D pass from `in` samples to `out` samples.
struct Taps {
  int width = 0;                // maximum number of taps of one output sample
  std::vector<int> first;       // [out] first input index used
  std::vector<int> count;       // [out] number of input samples used
  std::vector<int32_t> weight;  // [out * width] fixed-point weights, summing to ~2^22
};

Taps MakeTaps(int in, int out) {
  Taps t;
  const double scale = static_cast<double>(in) / out;
  const double stretch = std::max(scale, 1.0);  // widen the filter only when shrinking
  const double support = stretch;               // the triangle's half-width is 1
  const double inv_stretch = 1.0 / stretch;
  t.width = static_cast<int>(std::ceil(support)) * 2 + 1;
  t.first.resize(out);
  t.count.resize(out);
  t.weight.assign(static_cast<size_t>(out) * t.width, 0);
  std::vector<double> w(t.width);
  for (int j = 0; j < out; ++j) {
    const double center = (j + 0.5) * scale;
    const int lo = std::max(static_cast<int>(center - support + 0.5), 0);
    const int hi = std::min(static_cast<int>(center + support + 0.5), in);
    const int n = hi - lo;
    double total = 0.0;
    for (int k = 0; k < n; ++k) {
      const double x = std::fabs((k + lo - center + 0.5) * inv_stretch);
      w[k] = x < 1.0 ? 1.0 - x : 0.0;
      total += w[k];
    }
    int32_t* dst = &t.weight[static_cast<size_t>(j) * t.width];
    for (int k = 0; k < n; ++k) {
      const double v = total != 0.0 ? w[k] / total : w[k];
      dst[k] = static_cast<int32_t>(0.5 + v * (1 << kFractionBits));
    }
    t.first[j] = lo;
    t.count[j] = n;
  }
  return t;
}

inline uint8_t ToByte(int32_t acc) {
  const int32_t v = acc >> kFractionBits;
  return static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
}

// One output row of the horizontal pass, C channels known at compile time.
template <int C>
void HorizontalRow(const uint8_t* row, const Taps& t, int out_w, uint8_t* out) {
  for (int j = 0; j < out_w; ++j) {
    const int32_t* w = &t.weight[static_cast<size_t>(j) * t.width];
    const uint8_t* p = row + static_cast<size_t>(t.first[j]) * C;
    int32_t acc[C];
    for (int ch = 0; ch < C; ++ch) acc[ch] = kHalf;
    for (int k = 0; k < t.count[j]; ++k, p += C) {
      for (int ch = 0; ch < C; ++ch) acc[ch] += p[ch] * w[k];
    }
    for (int ch = 0; ch < C; ++ch) out[j * C + ch] = ToByte(acc[ch]);
  }
}

// The same for any channel count.
void HorizontalRowAny(const uint8_t* row, const Taps& t, int out_w, int c, uint8_t* out) {
  for (int j = 0; j < out_w; ++j) {
    const int32_t* w = &t.weight[static_cast<size_t>(j) * t.width];
    const uint8_t* p = row + static_cast<size_t>(t.first[j]) * c;
    for (int ch = 0; ch < c; ++ch) {
      int32_t acc = kHalf;
      for (int k = 0; k < t.count[j]; ++k) acc += p[k * c + ch] * w[k];
      out[j * c + ch] = ToByte(acc);
    }
  }
}

// [rows, in_w, c] -> [rows, out_w, c]
void Horizontal(const uint8_t* src, int rows, int in_w, int c, int out_w, uint8_t* dst) {
  const Taps t = MakeTaps(in_w, out_w);
  for (int y = 0; y < rows; ++y) {
    const uint8_t* row = src + static_cast<size_t>(y) * in_w * c;
    uint8_t* out = dst + static_cast<size_t>(y) * out_w * c;
    switch (c) {
      case 1: HorizontalRow<1>(row, t, out_w, out); break;
      case 3: HorizontalRow<3>(row, t, out_w, out); break;
      case 4: HorizontalRow<4>(row, t, out_w, out); break;
      default: HorizontalRowAny(row, t, out_w, c, out);
    }
  }
}

// [in_h, cols, c] -> [out_h, cols, c]
void Vertical(const uint8_t* src, int in_h, int cols, int c, int out_h, uint8_t* dst) {
  const Taps t = MakeTaps(in_h, out_h);
  const size_t row_len = static_cast<size_t>(cols) * c;
  std::vector<int32_t> acc(row_len);
  for (int i = 0; i < out_h; ++i) {
    std::fill(acc.begin(), acc.end(), kHalf);
    const int32_t* w = &t.weight[static_cast<size_t>(i) * t.width];
    for (int k = 0; k < t.count[i]; ++k) {
      const uint8_t* row = src + static_cast<size_t>(t.first[i] + k) * row_len;
      const int32_t wk = w[k];
      for (size_t e = 0; e < row_len; ++e) acc[e] += row[e] * wk;
    }
    uint8_t* out = dst + static_cast<size_t>(i) * row_len;
    for (size_t e = 0; e < row_len; ++e) out[e] = ToByte(acc[e]);
  }
}

class PilResizeOp : public tensorflow::OpKernel {
 public:
  explicit PilResizeOp(tensorflow::OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("legacy_pass_order", &legacy_pass_order_));
  }

  void Compute(tensorflow::OpKernelContext* ctx) override {
    const tensorflow::Tensor& image = ctx->input(0);
    const tensorflow::Tensor& size = ctx->input(1);
    OP_REQUIRES(ctx, image.dims() == 3,
                absl::InvalidArgumentError(absl::StrCat(
                    "image must be [height, width, channels], got shape ",
                    image.shape().DebugString())));
    OP_REQUIRES(ctx, size.NumElements() == 2,
                absl::InvalidArgumentError(absl::StrCat("size must hold 2 values, got ",
                                                    size.NumElements())));
    const auto hw = size.flat<int32_t>();
    const int out_h = hw(0), out_w = hw(1);
    const int in_h = static_cast<int>(image.dim_size(0));
    const int in_w = static_cast<int>(image.dim_size(1));
    const int c = static_cast<int>(image.dim_size(2));
    OP_REQUIRES(ctx, out_h > 0 && out_w > 0,
                absl::InvalidArgumentError(absl::StrCat("size must be positive, got ", out_h, "x",
                                                    out_w)));
    OP_REQUIRES(ctx, in_h > 0 && in_w > 0 && c > 0,
                absl::InvalidArgumentError(absl::StrCat("empty image of shape ",
                                                    image.shape().DebugString())));
    tensorflow::Tensor* output = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, tensorflow::TensorShape({out_h, out_w, c}),
                                             &output));
    const uint8_t* src = image.flat<uint8_t>().data();
    uint8_t* dst = output->flat<uint8_t>().data();
    const bool need_h = out_w != in_w, need_v = out_h != in_h;
    if (!need_h && !need_v) {
      std::copy(src, src + image.NumElements(), dst);
      return;
    }
    if (!need_h) return Vertical(src, in_h, in_w, c, out_h, dst);
    if (!need_v) return Horizontal(src, in_h, in_w, c, out_w, dst);
    const bool vertical_first =
        !legacy_pass_order_ && out_h < in_h && (in_h - out_h) > 2 * (in_w - out_w);
    if (vertical_first) {
      std::vector<uint8_t> tmp(static_cast<size_t>(out_h) * in_w * c);
      Vertical(src, in_h, in_w, c, out_h, tmp.data());
      Horizontal(tmp.data(), out_h, in_w, c, out_w, dst);
    } else {
      std::vector<uint8_t> tmp(static_cast<size_t>(in_h) * out_w * c);
      Horizontal(src, in_h, in_w, c, out_w, tmp.data());
      Vertical(tmp.data(), in_h, out_w, c, out_h, dst);
    }
  }

 private:
  bool legacy_pass_order_ = false;
};

}  // namespace

REGISTER_OP("WidesparsePilResize")
    .Input("image: uint8")
    .Input("size: int32")
    .Output("resized: uint8")
    .Attr("legacy_pass_order: bool = false")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      tensorflow::shape_inference::ShapeHandle image, hw, out;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 3, &image));
      TF_RETURN_IF_ERROR(c->MakeShapeFromShapeTensor(1, &hw));
      TF_RETURN_IF_ERROR(c->WithRank(hw, 2, &hw));
      TF_RETURN_IF_ERROR(c->Concatenate(hw, c->Vector(c->Dim(image, 2)), &out));
      c->set_output(0, out);
      return absl::OkStatus();
    });

REGISTER_KERNEL_BUILDER(Name("WidesparsePilResize").Device(tensorflow::DEVICE_CPU), PilResizeOp);
