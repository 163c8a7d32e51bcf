// The native core's index, aggregation and search-path code run once end to end under ASan +
// UBSan (with kernel_selfcheck for the SIMD kernels). Its job is memory and UB errors on the
// paths the Python suite (tests/native) drives through the module, which cannot itself run under
// the sanitizers reliably (see README.md): each result is checked against a brute-force reference
// or a known answer, so the run also fails on wrong results. Exit status 0 = all checks passed.
#include <unistd.h>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#include "frameseek/aggregate.hpp"
#include "frameseek/flat_index.hpp"
#include "frameseek/hnsw_index.hpp"
#include "frameseek/search_directory.hpp"
#include "search_request.hpp"
#include "wire.hpp"

using namespace frameseek;

namespace {

int failures = 0;

void expect(bool ok, const std::string& what) {
  if (!ok) {
    ++failures;
    std::fprintf(stderr, "FAIL %s\n", what.c_str());
  }
}

std::vector<float> random_rows(std::size_t n, std::size_t dim, std::mt19937& rng) {
  std::normal_distribution<float> nd;
  std::vector<float> v(n * dim);
  for (float& x : v) x = nd(rng);
  return v;
}

float l2(const float* a, const float* b, std::size_t dim) {
  double s = 0;
  for (std::size_t i = 0; i < dim; ++i) s += double(a[i] - b[i]) * (a[i] - b[i]);
  return float(s);
}

// Recall@10 of the HNSW index against exact L2 neighbours, every walk precision, with filters,
// removal + slot reuse, concurrent searches during an add, resize, save + load.
void check_hnsw(const std::filesystem::path& dir) {
  constexpr std::size_t dim = 33, n = 1500, k = 10, nq = 20;  // odd dim: every kernel tail
  std::mt19937 rng(7);
  const auto base = random_rows(n, dim, rng), queries = random_rows(nq, dim, rng);
  std::vector<std::uint64_t> ids(n), groups(n);
  for (std::size_t i = 0; i < n; ++i) ids[i] = 1000 + i, groups[i] = i / 30;

  HnswIndex index(dim, Metric::L2, 256, HnswParams{16, 100, 5});
  index.add(ids.data(), base.data(), n / 2, groups.data(), 2);
  {  // searches racing the second half's insertion (hnswlib's per-node locks)
    std::thread searcher([&] {
      std::vector<std::uint64_t> out(k);
      std::vector<float> d(k);
      for (int r = 0; r < 200; ++r)
        index.search(queries.data() + (r % nq) * dim, 1, k, 32, nullptr, out.data(), d.data(), 1);
    });
    index.add(ids.data() + n / 2, base.data() + n / 2 * dim, n - n / 2, groups.data() + n / 2, 2);
    searcher.join();
  }
  expect(index.size() == n, "hnsw size after adds");

  auto recall = [&](const HnswIndex& idx, const Filter* f) {
    std::vector<std::uint64_t> out(nq * k);
    std::vector<float> d(nq * k);
    idx.search(queries.data(), nq, k, 128, f, out.data(), d.data(), 2);
    std::size_t hit = 0, want = 0;
    for (std::size_t q = 0; q < nq; ++q) {
      std::vector<std::pair<float, std::uint64_t>> exact;
      for (std::size_t i = 0; i < n; ++i)
        if (idx.contains(ids[i]) && (!f || f->allows(ids[i], groups[i])))
          exact.emplace_back(l2(queries.data() + q * dim, base.data() + i * dim, dim), ids[i]);
      std::sort(exact.begin(), exact.end());
      exact.resize(std::min(k, exact.size()));
      want += exact.size();
      for (auto& [dd, id] : exact) hit += std::count(out.begin() + q * k, out.begin() + q * k + k, id);
      for (std::size_t j = 0; j < k; ++j)
        if (out[q * k + j] != kNoId)
          expect(!f || f->allows(out[q * k + j], groups[out[q * k + j] - 1000]), "hnsw result passes the filter");
    }
    return double(hit) / double(want);
  };
  for (auto p :
       {HnswIndex::WalkPrecision::Float32, HnswIndex::WalkPrecision::Float16, HnswIndex::WalkPrecision::Int8}) {
    index.set_walk_precision(p);
    expect(recall(index, nullptr) >= 0.9, "hnsw recall@10 >= 0.9 at walk precision " + std::to_string(int(p)));
  }
  Filter by_id;
  by_id.ids = std::unordered_set<std::uint64_t>{};
  for (std::size_t i = 0; i < n; i += 3) by_id.ids->insert(ids[i]);
  expect(recall(index, &by_id) >= 0.9, "hnsw recall with an id filter");
  Filter by_group;
  by_group.groups = std::unordered_set<std::uint64_t>{3, 7, 11};
  expect(recall(index, &by_group) >= 0.9, "hnsw recall with a group filter");

  std::vector<std::uint64_t> gout(nq * k), giout(nq * k);
  std::vector<float> gd(nq * k);
  index.search_groups(queries.data(), nq, k, 0, nullptr, gout.data(), giout.data(), gd.data(), 2);
  for (std::size_t q = 0; q < nq; ++q) {
    std::unordered_set<std::uint64_t> distinct(gout.begin() + q * k, gout.begin() + q * k + k);
    expect(distinct.size() == k, "search_groups returns k distinct groups");
  }

  std::vector<float> got(5 * dim);
  index.get_vectors(ids.data() + 10, 5, got.data());
  expect(std::equal(got.begin(), got.end(), base.begin() + 10 * dim), "get_vectors returns the vectors added");

  // remove a third, re-add them: the removed slots are reused, results stay right
  std::vector<std::uint64_t> gone(ids.begin(), ids.begin() + n / 3);
  expect(index.remove(gone.data(), gone.size()) == gone.size(), "remove counts the removed ids");
  const std::size_t cap = index.capacity();
  expect(recall(index, nullptr) >= 0.9, "hnsw recall after remove");
  index.add(gone.data(), base.data(), gone.size(), groups.data(), 2);
  expect(index.capacity() == cap, "removed slots are reused");
  index.resize(cap + 100);
  expect(index.capacity() == cap + 100, "resize");

  const std::string path = (dir / "index.fsh").string();
  index.save(path);
  auto loaded = HnswIndex::load(path);
  std::vector<std::uint64_t> a(nq * k), b(nq * k);
  std::vector<float> da(nq * k), db(nq * k);
  index.search(queries.data(), nq, k, 64, nullptr, a.data(), da.data(), 1);
  loaded->search(queries.data(), nq, k, 64, nullptr, b.data(), db.data(), 1);
  expect(a == b && da == db, "a loaded index answers as the saved one");
}

void check_flat() {
  constexpr std::size_t dim = 17, n = 600, k = 5;
  std::mt19937 rng(11);
  const auto base = random_rows(n, dim, rng), q = random_rows(1, dim, rng);
  std::vector<std::uint64_t> ids(n), groups(n);
  for (std::size_t i = 0; i < n; ++i) ids[i] = i, groups[i] = i / 10;
  for (Storage s : {Storage::F32, Storage::F16}) {
    FlatIndex flat(dim, Metric::L2, s);
    flat.add(n, ids.data(), base.data(), groups.data());
    flat.remove(3, ids.data());
    std::vector<std::uint64_t> out(k), gout(k);
    std::vector<float> d(k);
    flat.search(q.data(), 1, k, nullptr, 2, out.data(), d.data());
    std::vector<std::pair<float, std::uint64_t>> exact;
    for (std::size_t i = 3; i < n; ++i) exact.emplace_back(l2(q.data(), base.data() + i * dim, dim), i);
    std::sort(exact.begin(), exact.end());
    if (s == Storage::F32)
      for (std::size_t j = 0; j < k; ++j) expect(out[j] == exact[j].second, "flat f32 is exact");
    else
      expect(out[0] == exact[0].second, "flat f16 finds the nearest");
    flat.search_groups(q.data(), 1, k, nullptr, 2, gout.data(), out.data(), d.data());
    expect(gout[0] == exact[0].second / 10, "flat search_groups ranks the nearest group first");
  }
}

// A query that copies 20 s of video 5 at offset 30 s among noise from other videos.
void check_aggregate() {
  constexpr std::size_t q = 40, k = 4;
  std::vector<double> qt(q), rt(q * k);
  std::vector<std::uint64_t> ids(q * k, kNoId), groups(q * k);
  std::vector<float> sims(q * k);
  std::mt19937 rng(3);
  std::uniform_real_distribution<double> u(0, 100);
  for (std::size_t i = 0; i < q; ++i) {
    qt[i] = 0.5 * double(i);
    ids[i * k] = 5000 + i, groups[i * k] = 5, rt[i * k] = 30 + qt[i], sims[i * k] = 0.95f;
    for (std::size_t j = 1; j < k - 1; ++j)
      ids[i * k + j] = 9000 + i * k + j, groups[i * k + j] = 6 + j, rt[i * k + j] = u(rng), sims[i * k + j] = 0.6f;
  }
  AggregateInput in{q, k, qt.data(), ids.data(), groups.data(), rt.data(), sims.data(), nullptr};
  std::vector<float> w(q * k);
  neighbor_idf_weights(q, k, ids.data(), groups.data(), sims.data(), 0.5, 0.1, 2.0, 1.0, w.data());
  in.weights = w.data();
  AggregateParams p;
  p.threads = 2;
  const auto out = aggregate(in, p, nullptr);
  expect(!out.empty() && out[0].video == 5, "aggregate ranks the copied video first");
  expect(!out.empty() && !out[0].segments.empty() && std::fabs(out[0].segments[0].offset - 30.0) < 1.0 &&
             std::fabs(out[0].segments[0].speed - 1.0) < 0.05,
         "aggregate finds offset 30 s at speed 1");
}

// front_end::answer_search_by_vector end to end: request bytes -> SearchDirectory::nearest_videos
// over an HNSW collection -> response bytes with each hit's Video message from VideoMessages.
void check_directory() {
  constexpr std::size_t dim = 8;
  auto index = std::make_shared<HnswIndex>(dim, Metric::L2, 64);
  std::mt19937 rng(5);
  const auto base = random_rows(30, dim, rng);
  std::vector<std::uint64_t> ids, groups;
  SearchDirectory dir;
  front_end::VideoMessages messages;
  for (std::uint64_t v = 1; v <= 3; ++v) {
    auto dv = std::make_shared<DirectoryVideo>();
    dv->collection_id = 1;
    messages.put(v, 1, "video " + std::to_string(v));
    for (std::uint64_t s = 0; s < 10; ++s)
      ids.push_back(v << kSampleBits | s), groups.push_back(v), dv->timestamps.push_back(double(s));
    dir.put_video(v, dv);
  }
  // video 3 waits in the fresh segment (acknowledged, not yet linked into the graph)
  auto fresh = std::make_shared<FlatIndex>(dim, Metric::L2);
  index->add(ids.data(), base.data(), 20, groups.data(), 1);
  fresh->add(10, ids.data() + 20, base.data() + 20 * dim, groups.data() + 20);
  auto live = std::make_shared<OwnedLiveIndex>(index, fresh);
  auto c = std::make_shared<DirectoryCollection>();
  c->name = "1", c->id = 1, c->model = "m", c->is_default = true, c->index = &live->live, c->owner = live;
  dir.put_collection(c);
  dir.set_ready(true);
  messages.set_ready(true);
  // SearchByVectorRequest{vector = a sample's, options{k = 2}} -> the Video message of the best hit
  auto best_hit = [&](std::size_t row) {
    std::string req, opts, resp;
    wire::Writer(&opts).tag(1, wire::kVarint);
    wire::Writer(&opts).varint(2);
    wire::Writer w(&req);
    w.bytes_field(2, reinterpret_cast<const char*>(base.data() + row * dim), dim * sizeof(float));
    w.bytes_field(3, opts.data(), opts.size());
    expect(front_end::answer_search_by_vector(dir, messages, reinterpret_cast<const std::uint8_t*>(req.data()),
                                              req.size(), &resp),
           "the fast path answers a plain request");
    wire::Reader r(reinterpret_cast<const std::uint8_t*>(resp.data()), resp.size());
    std::uint32_t field, type;
    expect(r.next(&field, &type) && field == 1 && type == wire::kLen, "response starts with a hit");
    const wire::Span hit = r.bytes();
    wire::Reader hr(hit.data, hit.size);
    expect(hr.next(&field, &type) && field == 1, "the hit starts with its video");
    const wire::Span video = hr.bytes();
    return std::string(reinterpret_cast<const char*>(video.data), video.size);
  };
  expect(best_hit(14) == "video 2", "the best hit is video 2 (in the graph)");
  expect(best_hit(25) == "video 3", "the best hit is video 3 (in the fresh segment)");
}

}  // namespace

int main() {
  const auto dir = std::filesystem::temp_directory_path() / ("frameseek-selftest-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  check_hnsw(dir);
  check_flat();
  check_aggregate();
  check_directory();
  std::filesystem::remove_all(dir);
  std::printf("sanitize_selftest: %s (%d failures)\n", failures ? "FAIL" : "ok", failures);
  return failures ? 1 : 0;
}
