// train_fmnist: the dgs demo. One server and N workers train a classifier on
// Fashion-MNIST with a chosen method, and the program reports accuracy and
// the communication saved against dense pushes and pulls.
//
//   train_fmnist [--method samomentum] [--ratio 0.01] [--workers 4] [--epochs 3]
//                [--sync] [--transport local|mpi|nccl] [--backend auto|host|cuda] ...
//
// With a GPU (and dgs built with cuDNN) the model is a small CNN on the cuda
// backend; without one, a 784-128-10 perceptron on the host backend.
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <mutex>
#include <numeric>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <cuda_runtime_api.h>

#include "dgs/dgs.h"
#include "dgs/log.h"
#include "dgs/server.h"
#include "dgs/worker.h"
#include "model.h"
#if DGS_WITH_MPI
#include "dgs/mpi.h"
#endif
#if DGS_WITH_CUDNN
#include "cnn.h"
#endif
#if DGS_WITH_NCCL
#include "dgs/nccl.h"
#endif

namespace {

using Clock = std::chrono::steady_clock;

struct Options {
  dgs::Config config;
  float lr = -1.0f;         // per method when not given
  bool lr_default = false;  // not given: scaled down for many asynchronous workers
  int workers = 4;
  int epochs = 3;
  int batch = 32;
  std::string transport = "local";
  std::string backend = "auto";
  std::string data = "/usr/share/datasets/fashion-mnist";
  std::string json = "fmnist_results.json";
  std::string csv;
  std::uint64_t seed = 1;
  bool progress = true;
};

[[noreturn]] void usage(const std::string& problem) {
  std::fprintf(
      stderr,
      "%s%s"
      "usage: train_fmnist [options]\n"
      "  --method M         dense | gd | dgc | samomentum | gmc | gmc+   (samomentum)\n"
      "  --compressor C     topk | threshold | randk | rbgs              (topk)\n"
      "  --ratio R          keep ratio of a push                         (0.01)\n"
      "  --server-ratio R   keep ratio of a reply (0: the same as ratio) (= ratio)\n"
      "  --momentum M       momentum / beta                              (0.9)\n"
      "  --lr LR            learning rate, > 0 (0.1; 0.1 * (1 - m) with momentum;\n"
      "                     asynchronous, more than 4 workers: times sqrt(4 / workers))\n"
      "  --weight-decay WD                                               (0)\n"
      "  --clip-norm C      local gradient clipping, per worker (DGC)    (0: off)\n"
      "  --workers N        workers in this process (local transport), 1 to 1024  (4)\n"
      "  --epochs E                                                      (3)\n"
      "  --batch B          samples per worker step                      (32)\n"
      "  --sync             synchronous rounds instead of asynchronous pushes\n"
      "  --transport T      local | mpi | nccl   (local)\n"
      "                     mpi: under mpirun or srun, rank 0 serves; nccl: the same under a\n"
      "                     launcher (DGS_RANK/DGS_RENDEZVOUS or mpirun), or in this process\n"
      "                     on one GPU through NCCL send/receive to self\n"
      "  --backend B        auto | host | cuda                           (auto)\n"
      "                     auto: cuda with a GPU this build has kernels for and cuDNN\n"
      "                     (the CNN), else host (the MLP); cuda needs both\n"
      "  --data DIR         Fashion-MNIST IDX files   (/usr/share/datasets/fashion-mnist)\n"
      "  --json PATH        results as JSON                              (fmnist_results.json)\n"
      "  --csv PATH         results as CSV as well\n"
      "  --seed S           a whole number >= 0                          (1)\n"
      "  --no-progress      no progress bar\n",
      problem.c_str(), problem.empty() ? "" : "\n\n");
  std::exit(problem.empty() ? 0 : 2);
}

Options parse(int argc, char** argv) {
  Options o;
  o.config.method = dgs::Method::samomentum;
  o.config.ratio = 0.01;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage(a + " needs a value");
      return argv[++i];
    };
    auto number = [&]() {
      const std::string v = value();
      char* end = nullptr;
      const double x = std::strtod(v.c_str(), &end);
      if (end == v.c_str() || *end != '\0') usage(a + " expects a number, got '" + v + "'");
      return x;
    };
    // A whole number in [low, high] (2.7 or 1e3 are not taken for 2 or 1000).
    auto integer = [&](long long low, long long high) {
      const std::string v = value();
      char* end = nullptr;
      errno = 0;
      const long long x = std::strtoll(v.c_str(), &end, 10);
      if (end == v.c_str() || *end != '\0' || errno == ERANGE || x < low || x > high) {
        usage(a + " expects a whole number in [" + std::to_string(low) + ", " +
              std::to_string(high) + "], got '" + v + "'");
      }
      return x;
    };
    try {
      if (a == "--method")
        o.config.method = dgs::parse_method(value());
      else if (a == "--compressor")
        o.config.compressor = dgs::parse_compressor(value());
      else if (a == "--ratio")
        o.config.ratio = number();
      else if (a == "--server-ratio")
        o.config.server_ratio = number();
      else if (a == "--momentum")
        o.config.momentum = static_cast<float>(number());
      else if (a == "--lr") {
        o.lr = static_cast<float>(number());
        if (!(std::isfinite(o.lr) && o.lr > 0.0f)) usage("--lr must be a finite number above 0");
      } else if (a == "--weight-decay")
        o.config.weight_decay = static_cast<float>(number());
      else if (a == "--clip-norm")
        o.config.clip_norm = static_cast<float>(number());
      else if (a == "--workers")
        o.workers = static_cast<int>(integer(1, 1024));
      else if (a == "--epochs")
        o.epochs = static_cast<int>(integer(1, 1000000));
      else if (a == "--batch")
        o.batch = static_cast<int>(integer(1, 60000));
      else if (a == "--sync")
        o.config.mode = dgs::Mode::sync;
      else if (a == "--transport")
        o.transport = value();
      else if (a == "--backend")
        o.backend = value();
      else if (a == "--data")
        o.data = value();
      else if (a == "--json")
        o.json = value();
      else if (a == "--csv")
        o.csv = value();
      else if (a == "--seed")
        o.seed = static_cast<std::uint64_t>(integer(0, LLONG_MAX));
      else if (a == "--no-progress")
        o.progress = false;
      else if (a == "--help" || a == "-h")
        usage("");
      else
        usage("unknown option " + a);
    } catch (const dgs::Error& e) {
      usage(e.what());
    }
  }
  if (o.transport != "local" && o.transport != "mpi" && o.transport != "nccl") {
    usage("--transport must be local, mpi or nccl");
  }
  if (o.backend != "auto" && o.backend != "host" && o.backend != "cuda")
    usage("--backend must be auto, host or cuda");
  if (o.json.empty()) usage("--json needs a path");
  for (const std::string& path : {o.json, o.csv}) {
    struct stat st {};
    if (!path.empty() && ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode))
      usage("cannot write results to " + path + ": it is a directory");
  }
  // The configuration's own checks, before the data set is read.
  try {
    dgs::Config c = o.config;
    c.workers = static_cast<std::uint32_t>(o.workers);
    c.validate();
  } catch (const dgs::Error& e) {
    usage(e.what());
  }
  if (o.lr < 0.0f) {
    const bool momentum =
        o.config.method != dgs::Method::dense && o.config.method != dgs::Method::gd;
    o.lr = momentum ? 0.1f * (1.0f - o.config.momentum) : 0.1f;
    o.lr_default = true;
  }
  return o;
}

std::string cpu_name() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  }
  return "unknown CPU";
}

std::string now_iso() {
  char text[32];
  const std::time_t t = std::time(nullptr);
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return text;
}

std::string human_bytes(double b) {
  const char* units[] = {"B", "KB", "MB", "GB", "TB"};
  int u = 0;
  while (b >= 1000.0 && u < 4) {
    b /= 1000.0;
    ++u;
  }
  char text[32];
  std::snprintf(text, sizeof text, "%.1f %s", b, units[u]);
  return text;
}

struct EpochRecord {
  int epoch;
  double test_accuracy, test_loss, train_loss;
  std::uint64_t pushes, bytes_pushed, bytes_pulled, dense_bytes;
  double seconds;
};

// Everything the workers share: the data, the model factory and the losses.
struct Shared {
  const fmnist::Dataset* data;
  bool cuda;
  std::atomic<bool> failed{false};
  std::mutex loss_mutex;
  double loss_sum = 0.0;
  std::uint64_t loss_count = 0;
};

std::unique_ptr<fmnist::Model> make_model(const Shared& shared, cudaStream_t stream) {
#if DGS_WITH_CUDNN
  if (shared.cuda) return fmnist::make_cnn(*shared.data, stream);
#else
  (void)stream;
#endif
  return fmnist::make_mlp(*shared.data);
}

// Parameters or gradients in the backend's memory.
class Vector {
 public:
  Vector(bool device, std::size_t n) : device_(device), host_(device ? 0 : n) {
    if (device) {
      if (cudaMalloc(&data_, n * sizeof(float)) != cudaSuccess) {
        throw dgs::Error(dgs::ErrorCode::cuda,
                         "cudaMalloc of " + std::to_string(n) + " floats failed");
      }
    } else {
      data_ = host_.data();
    }
  }
  ~Vector() {
    if (device_) cudaFree(data_);
  }
  float* data() { return static_cast<float*>(data_); }

 private:
  bool device_;
  std::vector<float> host_;
  void* data_ = nullptr;
};

void train_worker(const Options& o, Shared& shared, const dgs::Segments& segments,
                  std::shared_ptr<dgs::Backend> backend, std::shared_ptr<dgs::Transport> transport,
                  std::uint32_t id, std::uint32_t workers, int server_rank) {
  cudaStream_t stream = nullptr;
  if (shared.cuda) cudaStreamCreate(&stream);
  {
    auto model = make_model(shared, stream);
    Vector weights(shared.cuda, segments.total()), grad(shared.cuda, segments.total());
    dgs::Config config = o.config;
    config.workers = workers;
    dgs::WorkerOptions wo;
    wo.id = id;
    wo.server_rank = server_rank;
    wo.stream = stream;
    dgs::Worker worker(config, segments, backend, transport, weights.data(), wo);
    worker.join();
    const int samples = shared.data->train_images.count;
    const int steps = samples / static_cast<int>(workers) / o.batch;
    std::vector<int> shard;
    for (int n = static_cast<int>(id); n < samples; n += static_cast<int>(workers))
      shard.push_back(n);
    std::vector<int> batch(o.batch);
    for (int epoch = 0; epoch < o.epochs; ++epoch) {
      std::mt19937_64 rng(o.seed * 1000003 + epoch * 7919 + id);
      std::shuffle(shard.begin(), shard.end(), rng);
      for (int s = 0; s < steps; ++s) {
        std::copy(shard.begin() + s * o.batch, shard.begin() + (s + 1) * o.batch, batch.begin());
        model->gradient(worker.evaluation_point(), batch, grad.data());
        worker.step(grad.data(), o.lr);
      }
      std::uint64_t batches = 0;
      const double loss = model->take_loss(batches);
      std::lock_guard<std::mutex> lock(shared.loss_mutex);
      shared.loss_sum += loss;
      shared.loss_count += batches;
    }
    worker.leave();
  }
  if (stream != nullptr) cudaStreamDestroy(stream);
}

void write_results(const Options& o, const std::vector<EpochRecord>& records,
                   const std::string& backend, const std::string& device, std::uint64_t parameters,
                   int workers) {
  std::ofstream json(o.json);
  json << "{\n  \"program\": \"train_fmnist\",\n  \"date\": \"" << now_iso() << "\",\n"
       << "  \"dgs_version\": \"" << DGS_VERSION_STRING << "\",\n"
       << "  \"backend\": \"" << backend << "\",\n  \"device\": \"" << device << "\",\n"
       << "  \"model\": \"" << (backend == "cuda" ? "cnn" : "mlp") << "\",\n"
       << "  \"parameters\": " << parameters << ",\n"
       << "  \"method\": \"" << dgs::to_string(o.config.method) << "\",\n"
       << "  \"compressor\": \"" << dgs::to_string(o.config.compressor) << "\",\n"
       << "  \"mode\": \"" << dgs::to_string(o.config.mode) << "\",\n"
       << "  \"ratio\": " << o.config.ratio << ",\n  \"server_ratio\": " << o.config.reply_ratio()
       << ",\n"
       << "  \"momentum\": " << o.config.momentum << ",\n  \"lr\": " << o.lr << ",\n"
       << "  \"workers\": " << workers << ",\n  \"batch\": " << o.batch << ",\n"
       << "  \"transport\": \"" << o.transport << "\",\n  \"seed\": " << o.seed << ",\n"
       << "  \"epochs\": [\n";
  for (std::size_t i = 0; i < records.size(); ++i) {
    const EpochRecord& r = records[i];
    json << "    {\"epoch\": " << r.epoch << ", \"test_accuracy\": " << r.test_accuracy
         << ", \"test_loss\": " << r.test_loss << ", \"train_loss\": "
         << (r.train_loss >= 0.0 ? std::to_string(r.train_loss) : std::string("null"))
         << ", \"pushes\": " << r.pushes << ", \"bytes_pushed\": " << r.bytes_pushed
         << ", \"bytes_pulled\": " << r.bytes_pulled
         << ", \"dense_bytes_each_way\": " << r.dense_bytes << ", \"seconds\": " << r.seconds << "}"
         << (i + 1 < records.size() ? "," : "") << "\n";
  }
  json << "  ]\n}\n";
  if (!json) throw dgs::Error(dgs::ErrorCode::io, "cannot write " + o.json);
  if (!o.csv.empty()) {
    std::ofstream csv(o.csv);
    csv << "epoch,test_accuracy,test_loss,train_loss,pushes,bytes_pushed,bytes_pulled,dense_bytes_"
           "each_way,seconds\n";
    for (const EpochRecord& r : records) {
      csv << r.epoch << "," << r.test_accuracy << "," << r.test_loss << ","
          << (r.train_loss >= 0.0 ? std::to_string(r.train_loss) : std::string()) << "," << r.pushes
          << "," << r.bytes_pushed << "," << r.bytes_pulled << "," << r.dense_bytes << ","
          << r.seconds << "\n";
    }
    if (!csv) throw dgs::Error(dgs::ErrorCode::io, "cannot write " + o.csv);
  }
}

void progress_bar(int epoch, int epochs, double fraction, double seconds) {
  constexpr int kWidth = 30;
  const int filled = static_cast<int>(fraction * kWidth);
  std::fprintf(stderr, "\repoch %d/%d [%.*s%*s] %3d%% %6.1f s", epoch, epochs, filled,
               "##############################", kWidth - filled, "",
               static_cast<int>(fraction * 100), seconds);
  std::fflush(stderr);
}

// Serves the job and evaluates W each time a training set's worth of pushes
// has been applied. Returns the per-epoch records.
std::vector<EpochRecord> serve(const Options& o, dgs::Server& server, Shared& shared,
                               fmnist::Model& evaluator, const dgs::Segments& segments,
                               int workers) {
  const std::uint64_t p = segments.total();
  const int steps = shared.data->train_images.count / workers / o.batch;
  const std::uint64_t per_epoch =
      static_cast<std::uint64_t>(steps) * static_cast<std::uint64_t>(workers);
  std::vector<EpochRecord> records;
  std::vector<float> host_model(p);
  Vector params(shared.cuda, p);
  const bool bar = o.progress && ::isatty(STDERR_FILENO);
  const auto start = Clock::now();
  auto epoch_start = start;
  while (static_cast<int>(records.size()) < o.epochs) {
    server.serve_one(std::chrono::milliseconds(100));
    if (shared.failed) throw dgs::Error(dgs::ErrorCode::internal, "a worker failed");
    // Every worker has joined and left (one that starts late is waited for).
    if (server.joined_workers() == static_cast<std::size_t>(workers) &&
        server.live_workers() == 0 && server.stats().pushes < per_epoch * o.epochs) {
      throw dgs::Error(dgs::ErrorCode::transport, "every worker left before the last epoch");
    }
    const dgs::ServerStats& s = server.stats();
    const int epoch = static_cast<int>(records.size());
    const double in_epoch =
        static_cast<double>(s.pushes - per_epoch * epoch) / static_cast<double>(per_epoch);
    if (bar)
      progress_bar(epoch + 1, o.epochs, std::min(1.0, in_epoch),
                   std::chrono::duration<double>(Clock::now() - epoch_start).count());
    if (s.pushes < per_epoch * (epoch + 1)) continue;
    EpochRecord r{};
    r.epoch = epoch + 1;
    server.copy_model(host_model.data());
    if (shared.cuda) {
      cudaMemcpy(params.data(), host_model.data(), p * sizeof(float), cudaMemcpyHostToDevice);
      evaluator.evaluate(params.data(), r.test_accuracy, r.test_loss);
    } else {
      evaluator.evaluate(host_model.data(), r.test_accuracy, r.test_loss);
    }
    {
      std::lock_guard<std::mutex> lock(shared.loss_mutex);
      // Workers in other processes (MPI) report no loss here: -1 means unknown.
      r.train_loss = shared.loss_count ? shared.loss_sum / shared.loss_count : -1.0;
      shared.loss_sum = 0.0;
      shared.loss_count = 0;
    }
    r.pushes = s.pushes;
    r.bytes_pushed = s.bytes_received;
    r.bytes_pulled = s.bytes_sent;
    r.dense_bytes = s.pushes * p * sizeof(float);
    r.seconds = std::chrono::duration<double>(Clock::now() - start).count();
    if (bar) std::fprintf(stderr, "\r%*s\r", 70, "");
    char train_loss[32] = "n/a";
    if (r.train_loss >= 0.0) std::snprintf(train_loss, sizeof train_loss, "%.4f", r.train_loss);
    std::printf(
        "epoch %d/%d  test accuracy %.2f%%  test loss %.4f  train loss %s  "
        "pushed %s pulled %s (dense: %s each way)  %.1f s\n",
        r.epoch, o.epochs, 100.0 * r.test_accuracy, r.test_loss, train_loss,
        human_bytes(static_cast<double>(r.bytes_pushed)).c_str(),
        human_bytes(static_cast<double>(r.bytes_pulled)).c_str(),
        human_bytes(static_cast<double>(r.dense_bytes)).c_str(), r.seconds);
    std::fflush(stdout);
    records.push_back(r);
    epoch_start = Clock::now();
  }
  // Let the workers say bye.
  while (server.live_workers() > 0) server.serve_one(std::chrono::milliseconds(100));
  return records;
}

int run(int argc, char** argv) {
  Options o = parse(argc, argv);
  // Where the ranks are: threads of this process (local, or nccl without a
  // launcher: the one-GPU loopback), or processes (mpi, nccl under a launcher).
  // The launcher's rank and world, read once: part of a multi-process job
  // when started by mpirun/srun, or when a launcher set a world of more than
  // one process (DGS_RANK/DGS_WORLD_SIZE, SLURM_PROCID/SLURM_NTASKS, ...).
  const std::optional<dgs::LaunchInfo> launch = dgs::find_launch();
  const bool several = launch && launch->size > 1;
  const bool launched = dgs::launched_by_mpi() || several;
  if (several && o.transport == "local") {
    // Every rank would train a job of its own and write the same results.
    usage(
        "started by a launcher (mpirun, srun, torchrun or DGS_RANK/DGS_WORLD_SIZE) with the "
        "local transport, where every process would train a job of its own: pass --transport "
        "mpi or --transport nccl");
  }
  const bool in_process = o.transport == "local" || (o.transport == "nccl" && !launched);
  // A process of a multi-process job takes the GPU of its local rank
  // (dgs::local_gpu) before anything asks about GPUs: the backend, the model
  // and the transport all use that one, and no other gets a context.
  int gpu = 0;
  int devices = 0;
  if (!in_process && cudaGetDeviceCount(&devices) == cudaSuccess && devices > 0) {
    gpu = launch ? dgs::local_gpu(*launch, devices) : 0;
    cudaSetDevice(gpu);
  }
  cudaGetLastError();
  const bool want_cuda =
      o.backend == "cuda" || (o.backend == "auto" && dgs::cuda_available() && DGS_WITH_CUDNN);
  if (want_cuda && !DGS_WITH_CUDNN)
    usage("--backend cuda needs dgs built with cuDNN (-DDGS_WITH_CUDNN=ON)");
  if (want_cuda && !dgs::cuda_available()) {
    usage(
        "--backend cuda: no usable CUDA device (none, or none this build has kernels for: "
        "build with CUDA_ARCHS=native)");
  }
  if (o.transport == "nccl" && !want_cuda) {
    usage(std::string("--transport nccl needs the cuda backend: ") +
          (!dgs::cuda_available() ? "no usable CUDA device"
           : !DGS_WITH_CUDNN ? "this build has no cuDNN (configure dgs with -DDGS_WITH_CUDNN=ON)"
                             : "--backend host was asked for"));
  }
  if (o.transport == "nccl" && !DGS_WITH_NCCL)
    usage("this build has no NCCL (configure dgs with -DDGS_WITH_NCCL=ON)");
  if (o.transport == "mpi" && !DGS_WITH_MPI)
    usage("this build has no MPI (configure dgs with -DDGS_WITH_MPI=ON)");

#if DGS_WITH_MPI
  std::unique_ptr<dgs::MpiSession> mpi;
  if (!in_process && dgs::launched_by_mpi()) mpi = std::make_unique<dgs::MpiSession>(&argc, &argv);
#endif
  int rank = 0;
  int workers = o.workers;
  std::vector<std::shared_ptr<dgs::Transport>> endpoints;  // in process: rank r at r
  std::shared_ptr<dgs::Transport> transport;               // across processes
  std::unique_ptr<dgs::LocalHub> hub;
  const dgs::MemoryKind memory = want_cuda ? dgs::MemoryKind::device : dgs::MemoryKind::host;
  if (o.transport == "local") {
    hub = std::make_unique<dgs::LocalHub>(workers + 1, memory);
    for (int r = 0; r <= workers; ++r) endpoints.push_back(hub->endpoint(r));
  } else if (o.transport == "mpi") {
#if DGS_WITH_MPI
    if (!mpi) usage("--transport mpi: start the program with mpirun or srun");
    transport = dgs::make_mpi_transport(memory);
#endif
  } else {
#if DGS_WITH_NCCL
    if (in_process) {
      endpoints = dgs::make_nccl_loopback(workers);
    } else {
      auto bootstrap = dgs::make_bootstrap();
      transport = dgs::make_nccl_transport(*bootstrap);
    }
#endif
  }
  if (transport) {
    rank = transport->rank();
    workers = transport->size() - 1;
  }
  // Rank 0 writes the results at the end: a path it cannot write is said now.
  for (const std::string& path : {o.json, o.csv}) {
    if (rank != 0 || path.empty()) continue;
    const std::size_t slash = path.find_last_of('/');
    const std::string dir =
        slash == std::string::npos ? "." : path.substr(0, std::max<std::size_t>(slash, 1));
    if (::access(dir.c_str(), W_OK) != 0)
      usage("cannot write results to " + path + " (" + dir + " is not a writable directory)");
  }
  // More asynchronous workers apply more stale updates per unit of progress:
  // the default step shrinks with sqrt(4 / workers) beyond 4 (measured on an
  // H100: the CNN with 16 workers diverges at 0.01 and reaches 84% in 3
  // epochs at 0.005; bench/README.md).
  std::string lr_note;
  if (o.lr_default && o.config.mode == dgs::Mode::async && workers > 4) {
    o.lr *= std::sqrt(4.0f / static_cast<float>(workers));
    lr_note =
        " (default, scaled by sqrt(4/" + std::to_string(workers) + ") for asynchronous workers)";
  }
  if (workers < 1) usage("a multi-process job needs at least 2 ranks (mpirun -np 1+N)");

  const fmnist::Dataset data = fmnist::load(o.data);
  if (data.train_images.count / workers / o.batch < 1) {
    usage("--batch " + std::to_string(o.batch) + " with " + std::to_string(workers) +
          " workers leaves no step per epoch: each worker's share of the " +
          std::to_string(data.train_images.count) + " training images is under one batch");
  }
  Shared shared;
  shared.data = &data;
  shared.cuda = want_cuda;
  auto backend =
      dgs::make_backend(want_cuda ? dgs::BackendKind::cuda : dgs::BackendKind::host, gpu);
  auto evaluator = make_model(shared, nullptr);
  const dgs::Segments segments = evaluator->segments();
  dgs::Config config = o.config;
  config.workers = static_cast<std::uint32_t>(workers);
  config.validate();
  std::string device = cpu_name();
  if (want_cuda) {
    cudaDeviceProp prop;
    int current = 0;
    cudaGetDevice(&current);
    cudaGetDeviceProperties(&prop, current);
    device = prop.name;
  }
  const std::string backend_name = want_cuda ? "cuda" : "host";
  if (rank == 0) {
    // Only the settings the method uses: dense sends everything, and gd
    // (like dense) has no momentum.
    char clip[48] = "", sparsity[96] = "", momentum[32] = "";
    if (config.clip_norm > 0.0f)
      std::snprintf(clip, sizeof clip, ", clip norm %g", config.clip_norm);
    if (config.method != dgs::Method::dense) {
      std::snprintf(sparsity, sizeof sparsity, ", compressor %s, ratio %g (replies %g)",
                    dgs::to_string(config.compressor), config.ratio, config.reply_ratio());
    }
    if (config.method != dgs::Method::dense && config.method != dgs::Method::gd)
      std::snprintf(momentum, sizeof momentum, ", momentum %g", config.momentum);
    std::printf(
        "train_fmnist: %s (%s backend, %s) on %s, %llu parameters\n"
        "  %d %s workers, method %s%s, lr %g%s%s, batch %d%s\n",
        want_cuda ? "CNN" : "MLP", backend_name.c_str(), device.c_str(),
        (o.transport + (in_process && o.transport == "nccl" ? " (one-GPU loopback)" : "")).c_str(),
        static_cast<unsigned long long>(segments.total()), workers, dgs::to_string(config.mode),
        dgs::to_string(config.method), sparsity, o.lr, lr_note.c_str(), momentum, o.batch, clip);
    std::fflush(stdout);
  }

  std::vector<EpochRecord> records;
  if (in_process) {
    std::vector<float> initial;
    evaluator->initialize(initial, o.seed);
    dgs::Server server(config, segments, backend, endpoints[0], initial.data());
    std::vector<std::thread> threads;
    std::string failure;
    std::mutex failure_mutex;
    for (int k = 0; k < workers; ++k) {
      threads.emplace_back([&, k] {
        try {
          train_worker(o, shared, segments, backend, endpoints[k + 1],
                       static_cast<std::uint32_t>(k), static_cast<std::uint32_t>(workers), 0);
        } catch (const std::exception& e) {
          std::lock_guard<std::mutex> lock(failure_mutex);
          failure = e.what();
          shared.failed = true;
          if (hub) hub->close(k + 1);
        }
      });
    }
    try {
      records = serve(o, server, shared, *evaluator, segments, workers);
    } catch (...) {
      if (hub) {
        for (int k = 0; k < workers; ++k) hub->close(k + 1);
      }
      for (auto& t : threads) t.join();
      if (shared.failed) throw dgs::Error(dgs::ErrorCode::internal, "a worker failed: " + failure);
      throw;
    }
    for (auto& t : threads) t.join();
    if (shared.failed) throw dgs::Error(dgs::ErrorCode::internal, "a worker failed: " + failure);
  } else if (rank == 0) {
    std::vector<float> initial;
    evaluator->initialize(initial, o.seed);
    dgs::Server server(config, segments, backend, transport, initial.data());
    records = serve(o, server, shared, *evaluator, segments, workers);
  } else {
    train_worker(o, shared, segments, backend, transport, static_cast<std::uint32_t>(rank - 1),
                 static_cast<std::uint32_t>(workers), 0);
    return 0;
  }
  write_results(o, records, backend_name, device, segments.total(), workers);
  const EpochRecord& last = records.back();
  const double sent = static_cast<double>(last.bytes_pushed + last.bytes_pulled);
  const double dense = 2.0 * static_cast<double>(last.dense_bytes);
  std::printf(
      "final test accuracy %.2f%% after %d epoch%s; communication %s instead of %s dense "
      "(%.1f%% saved, %.1fx less); results in %s\n",
      100.0 * last.test_accuracy, o.epochs, o.epochs == 1 ? "" : "s", human_bytes(sent).c_str(),
      human_bytes(dense).c_str(), 100.0 * (1.0 - sent / dense), dense / sent, o.json.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {  // dgs::Error, or what the C++ library threw
    std::fprintf(stderr, "train_fmnist: %s\n", e.what());
    return 1;
  }
}
