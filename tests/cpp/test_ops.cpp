// C++ tests of the recon_fast ops through the PyTorch dispatcher (the way a libtorch user calls
// them), against brute-force definitions written here. Run by ctest.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/Exception.h>

#include <cstdio>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

namespace {

int failures = 0;

void expect(bool ok, const std::string& what) {
  std::printf("%s %s\n", ok ? "[ ok ]" : "[FAIL]", what.c_str());
  if (!ok) ++failures;
}

double sq_dist(const at::Tensor& a, int64_t i, const at::Tensor& b, int64_t j) {
  const auto pa = a.accessor<double, 2>(), pb = b.accessor<double, 2>();
  double dx = pa[i][0] - pb[j][0], dy = pa[i][1] - pb[j][1], dz = pa[i][2] - pb[j][2];
  return (dx * dx + dy * dy) + dz * dz;
}

at::Tensor call_fps(const at::Tensor& xyz, int64_t m) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("recon_fast::fps", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, int64_t,
                                         const at::Tensor&, double)>();
  const auto B = xyz.size(0);
  return op.call(xyz, at::full({B}, xyz.size(1), at::kLong), m, at::zeros({B}, at::kLong), -1.0);
}

std::tuple<at::Tensor, at::Tensor> call_knn(const at::Tensor& q, const at::Tensor& p, int64_t k) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("recon_fast::knn", "")
                       .typed<std::tuple<at::Tensor, at::Tensor>(
                           const at::Tensor&, const at::Tensor&, const at::Tensor&,
                           const at::Tensor&, int64_t, int64_t)>();
  const auto B = q.size(0);
  return op.call(q, p, at::full({B}, q.size(1), at::kLong), at::full({B}, p.size(1), at::kLong),
                 k, 2);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> call_chamfer(const at::Tensor& x,
                                                                        const at::Tensor& y) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("recon_fast::chamfer", "")
                       .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
                           const at::Tensor&, const at::Tensor&, const at::Tensor&,
                           const at::Tensor&, int64_t)>();
  const auto B = x.size(0);
  return op.call(x, y, at::full({B}, x.size(1), at::kLong), at::full({B}, y.size(1), at::kLong), 2);
}

// Farthest point sampling written out: running minimum, first maximal index.
std::vector<int64_t> fps_brute(const at::Tensor& pts, int64_t m) {
  const int64_t n = pts.size(0);
  std::vector<double> mind(n, std::numeric_limits<double>::infinity());
  std::vector<int64_t> out{0};
  for (int64_t j = 1; j < m; ++j) {
    int64_t best = 0;
    for (int64_t i = 0; i < n; ++i) {
      mind[i] = std::min(mind[i], sq_dist(pts, out.back(), pts, i));
      if (mind[i] > mind[best]) best = i;
    }
    out.push_back(best);
  }
  return out;
}

void test_fps() {
  for (int64_t n : {1, 17, 300, 9000}) {
    const auto xyz = at::rand({2, n, 3}, at::kDouble);
    const int64_t m = std::min<int64_t>(n, 40);
    const auto idx = call_fps(xyz, m);
    bool ok = idx.sizes() == at::IntArrayRef({2, m});
    for (int64_t b = 0; b < 2 && ok; ++b) {
      const auto want = fps_brute(xyz[b], m);
      for (int64_t j = 0; j < m; ++j) ok &= idx[b][j].item<int64_t>() == want[j];
    }
    expect(ok, "fps matches brute force, N=" + std::to_string(n));
  }
  const auto idx = call_fps(at::rand({3, 50, 3}, at::kFloat), 50);
  expect(std::get<0>(at::_unique(idx[0])).numel() == 50, "fps with m=N visits every point once");
}

void test_knn() {
  for (int64_t n : {5, 200, 5000}) {
    const auto p = at::rand({2, n, 3}, at::kDouble), q = at::rand({2, 70, 3}, at::kDouble);
    const int64_t k = std::min<int64_t>(n, 8);
    auto [dist, idx] = call_knn(q, p, k);
    bool ok = true;
    for (int64_t b = 0; b < 2; ++b) {
      for (int64_t i = 0; i < 70; ++i) {
        std::vector<std::pair<double, int64_t>> all;
        for (int64_t j = 0; j < n; ++j) all.emplace_back(sq_dist(q[b], i, p[b], j), j);
        std::sort(all.begin(), all.end());
        for (int64_t j = 0; j < k; ++j) {
          ok &= idx[b][i][j].item<int64_t>() == all[j].second;
          ok &= dist[b][i][j].item<double>() == all[j].first;
        }
      }
    }
    expect(ok, "knn matches a sorted brute force, N=" + std::to_string(n));
  }
  bool threw = false;
  try {
    call_knn(at::rand({1, 4, 3}), at::rand({1, 4, 3}), 5);
  } catch (const c10::ValueError& e) {
    threw = std::string(e.what()).find("k must be in [1, N]") != std::string::npos;
  }
  expect(threw, "knn with k > N raises a ValueError naming k");
}

void test_chamfer() {
  const auto x = at::rand({3, 33, 3}, at::kDouble), y = at::rand({3, 20, 3}, at::kDouble);
  auto [dxy, dyx, ixy, iyx] = call_chamfer(x, y);
  bool ok = true;
  for (int64_t b = 0; b < 3; ++b) {
    for (int64_t i = 0; i < 33; ++i) {
      int64_t best = 0;
      for (int64_t j = 1; j < 20; ++j) {
        if (sq_dist(x[b], i, y[b], j) < sq_dist(x[b], i, y[b], best)) best = j;
      }
      ok &= ixy[b][i].item<int64_t>() == best;
      ok &= dxy[b][i].item<double>() == sq_dist(x[b], i, y[b], best);
    }
    for (int64_t j = 0; j < 20; ++j) {
      int64_t best = 0;
      for (int64_t i = 1; i < 33; ++i) {
        if (sq_dist(y[b], j, x[b], i) < sq_dist(y[b], j, x[b], best)) best = i;
      }
      ok &= iyx[b][j].item<int64_t>() == best;
    }
  }
  expect(ok, "chamfer nearest neighbours match brute force both ways");
}

void test_bad_input() {
  bool threw = false;
  try {
    call_fps(at::rand({2, 10, 0}), 3);
  } catch (const c10::ValueError& e) {
    threw = std::string(e.what()).find("xyz must have points of dimension D >= 1") !=
            std::string::npos;
  }
  expect(threw, "fps on (B, N, 0) raises a ValueError naming xyz");
}

}  // namespace

int main() {
  at::manual_seed(0);
  test_fps();
  test_knn();
  test_chamfer();
  test_bad_input();
  std::printf("%d failed\n", failures);
  return failures == 0 ? 0 : 1;
}
