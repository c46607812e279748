// farm's ExecuTorch runner: times a .pte in its own process, without Python.
//
//   runner --model M.pte [--threads T] [--warmup W] [--runs N]
//          [--input IN.bin] [--output OUT.bin] [--serve]
//
// It loads the program (XNNPACK delegate and portable kernels are registered by
// the library it links), sets every input from IN.bin (the inputs' raw bytes,
// one after the other, in the method's order; ones without it), runs W warm-up
// inferences and then N timed ones, each between two CLOCK_MONOTONIC readings
// (the clock Python's time.monotonic_ns/perf_counter_ns read on Linux), and
// prints one JSON line: {"begin_ns": [...], "end_ns": [...], "rss_kb", "hwm_kb",
// "load_ns", "threads", "outputs"} — the shape farm.engine.timing produces, so
// markers, statistics and energy alignment stay farm's. OUT.bin receives the
// last run's outputs (raw bytes, in order) for the agreement check.
// With --serve it loads once and then reads requests on stdin, one line each
// holding N: it runs N timed inferences and answers one JSON line (warm-up is
// the caller's: a first request whose answer it discards).
//
// Errors: one line "runner: ..." on stderr, exit 1 (bad arguments: exit 2).

#include <executorch/runtime/core/data_loader.h>
#include <executorch/runtime/executor/method.h>
#include <executorch/runtime/executor/program.h>
#include <executorch/runtime/platform/runtime.h>

#include <time.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

// The wheel's threadpool.h includes pthreadpool.h, which the wheel does not ship:
// the one member used here is declared instead (the library defines it).
namespace executorch::extension::threadpool {
class ThreadPool {
 public:
  bool _unsafe_reset_threadpool(uint32_t num_threads);
};
ThreadPool* get_threadpool();
}  // namespace executorch::extension::threadpool

namespace rt = executorch::runtime;
using executorch::aten::Tensor;

namespace {

[[noreturn]] void fail(const std::string& what, int code = 1) {
  std::fprintf(stderr, "runner: %s\n", what.c_str());
  std::exit(code);
}

std::vector<char> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot read " + path);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// The whole .pte in memory: segments are views into it (nothing to free).
class BytesLoader final : public rt::DataLoader {
 public:
  explicit BytesLoader(std::vector<char> bytes) : bytes_(std::move(bytes)) {}
  rt::Result<rt::FreeableBuffer> load(size_t offset, size_t size, const SegmentInfo&) const override {
    if (offset + size > bytes_.size()) return rt::Error::InvalidArgument;
    return rt::FreeableBuffer(bytes_.data() + offset, size, nullptr);
  }
  rt::Result<size_t> size() const override { return bytes_.size(); }

 private:
  std::vector<char> bytes_;
};

int64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

long status_kb(const char* field) {  // a "VmRSS:  123 kB" line of /proc/self/status
  std::ifstream in("/proc/self/status");
  std::string line;
  size_t n = std::strlen(field);
  while (std::getline(in, line))
    if (line.compare(0, n, field) == 0) return std::atol(line.c_str() + n + 1);
  return -1;
}

std::string ns_list(const std::vector<int64_t>& v) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) out += (i ? "," : "") + std::to_string(v[i]);
  return out + "]";
}


struct Times {
  std::vector<int64_t> begin, end;
};

Times timed(rt::Method& method, long n) {
  Times t;
  t.begin.reserve(size_t(n));
  t.end.reserve(size_t(n));
  for (long i = 0; i < n; ++i) {
    int64_t t0 = now_ns();
    rt::Error status = method.execute();
    int64_t t1 = now_ns();
    if (status != rt::Error::Ok) fail("execute failed (error 0x" + std::to_string(int(status)) + ")");
    t.begin.push_back(t0);
    t.end.push_back(t1);
  }
  return t;
}

// One JSON line on stdout; the outputs of the last inference to `output` (if named).
void report(rt::Method& method, const Times& t, const std::string& output, int64_t load_ns, long threads) {
  size_t outputs = method.outputs_size();
  if (!output.empty()) {
    std::ofstream out(output, std::ios::binary | std::ios::trunc);
    for (size_t i = 0; i < outputs; ++i) {
      const rt::EValue& value = method.get_output(i);
      if (!value.isTensor()) continue;
      Tensor tensor = value.toTensor();
      out.write(static_cast<const char*>(tensor.const_data_ptr()), std::streamsize(tensor.nbytes()));
    }
    if (!out) fail("cannot write " + output);
  }
  long rss = status_kb("VmRSS:"), hwm = status_kb("VmHWM:");  // the kernel updates HWM lazily
  std::printf("{\"begin_ns\": %s, \"end_ns\": %s, \"load_ns\": %lld, \"threads\": %ld, \"outputs\": %zu, \"rss_kb\": %ld, \"hwm_kb\": %ld}\n",
              ns_list(t.begin).c_str(), ns_list(t.end).c_str(), (long long)load_ns, threads, outputs, rss, std::max(rss, hwm));
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  std::string model, input, output;
  long threads = 0, warmup = 1, runs = 10;
  bool serve = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--serve") { serve = true; continue; }
    if (i + 1 >= argc) fail("missing value after " + arg, 2);
    std::string value = argv[++i];
    if (arg == "--model") model = value;
    else if (arg == "--input") input = value;
    else if (arg == "--output") output = value;
    else if (arg == "--threads") threads = std::atol(value.c_str());
    else if (arg == "--warmup") warmup = std::atol(value.c_str());
    else if (arg == "--runs") runs = std::atol(value.c_str());
    else fail("unknown argument " + arg, 2);
  }
  if (model.empty() || runs < 1 || warmup < 0 || threads < 0) fail("usage: runner --model M.pte [--threads T] [--warmup W] [--runs N] [--input F] [--output F]", 2);

  rt::runtime_init();
  // Once, before anything is loaded: resizing the pool later is unsafe.
  if (threads > 0) executorch::extension::threadpool::get_threadpool()->_unsafe_reset_threadpool(uint32_t(threads));

  int64_t load_begin = now_ns();
  BytesLoader loader(read_file(model));
  auto program = rt::Program::load(&loader);
  if (!program.ok()) fail("cannot parse " + model + " as an ExecuTorch program");
  auto name = program->get_method_name(0);
  if (!name.ok()) fail(model + " has no method");
  auto meta = program->method_meta(*name);
  if (!meta.ok()) fail("no metadata for method " + std::string(*name));

  std::vector<std::unique_ptr<uint8_t[]>> planned;
  std::vector<rt::Span<uint8_t>> spans;
  for (size_t id = 0; id < meta->num_memory_planned_buffers(); ++id) {
    size_t n = size_t(meta->memory_planned_buffer_size(id).get());
    planned.emplace_back(new uint8_t[n]);
    spans.emplace_back(planned.back().get(), n);
  }
  rt::HierarchicalAllocator planned_memory({spans.data(), spans.size()});
  static uint8_t method_pool[8 << 20], temp_pool[4 << 20];
  rt::MemoryAllocator method_allocator(sizeof(method_pool), method_pool);
  rt::MemoryAllocator temp_allocator(sizeof(temp_pool), temp_pool);
  rt::MemoryManager memory(&method_allocator, &planned_memory, &temp_allocator);
  auto method = program->load_method(*name, &memory);
  if (!method.ok()) fail("cannot load method " + std::string(*name) + " (error 0x" + std::to_string(int(method.error())) + "): a missing operator or delegate?");

  // Inputs: tensors over our own buffers, filled from --input (else ones).
  std::vector<char> given = input.empty() ? std::vector<char>() : read_file(input);
  size_t offset = 0;
  std::vector<std::vector<char>> data;
  std::vector<std::vector<int32_t>> sizes;
  std::vector<std::unique_ptr<executorch::aten::TensorImpl>> impls;
  for (size_t i = 0; i < method->inputs_size(); ++i) {
    auto info = meta->input_tensor_meta(i);
    if (!info.ok()) fail("input " + std::to_string(i) + " is not a tensor");
    size_t n = info->nbytes();
    data.emplace_back(n);
    if (!given.empty()) {
      if (offset + n > given.size()) fail(input + " holds fewer bytes than the inputs need");
      std::memcpy(data.back().data(), given.data() + offset, n);
      offset += n;
    } else if (info->scalar_type() == executorch::aten::ScalarType::Float) {
      float* f = reinterpret_cast<float*>(data.back().data());
      for (size_t k = 0; k < n / sizeof(float); ++k) f[k] = 1.0f;
    }
    sizes.emplace_back(info->sizes().begin(), info->sizes().end());
    impls.emplace_back(new executorch::aten::TensorImpl(info->scalar_type(), ssize_t(sizes.back().size()), sizes.back().data(), data.back().data()));
    if (method->set_input(rt::EValue(Tensor(impls.back().get())), i) != rt::Error::Ok) fail("cannot set input " + std::to_string(i));
  }
  if (!given.empty() && offset != given.size()) fail(input + " holds more bytes than the inputs need");
  int64_t load_ns = now_ns() - load_begin;

  if (!serve) {
    for (long i = 0; i < warmup; ++i) timed(*method, 1);
    report(*method, timed(*method, runs), output, load_ns, threads);
    return 0;
  }
  // --serve: one line per request, N (a count of timed inferences); EOF or 0 ends.
  // "bare N": N inferences with no clock reading between them, the loop timed as a
  // whole (what farm's per-inference readings are checked against).
  std::string line;
  while (std::getline(std::cin, line)) {
    bool bare = line.compare(0, 5, "bare ") == 0;
    long n = std::atol(line.c_str() + (bare ? 5 : 0));
    if (n <= 0) break;
    if (!bare) {
      report(*method, timed(*method, n), output, load_ns, threads);
      continue;
    }
    int64_t t0 = now_ns();
    for (long i = 0; i < n; ++i)
      if (method->execute() != rt::Error::Ok) fail("execute failed");
    int64_t t1 = now_ns();
    std::printf("{\"bare_ns\": %lld, \"n\": %ld}\n", (long long)(t1 - t0), n);
    std::fflush(stdout);
  }
  return 0;
}
