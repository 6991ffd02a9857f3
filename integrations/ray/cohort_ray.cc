// Cohort's bridge to Ray's C++ API: the one place Cohort touches Ray.
//
// Built by scripts/build-ray.sh into libcohort_ray.so (needs PyPI's `ray[cpp]`), never by
// SwiftPM: the default build needs no Ray. Two users load it:
//   - the driver (`cohort generate --launcher ray`) dlopens it and calls the extern "C"
//     functions below: connect, place a placement group, start one supervisor actor per
//     worker bundle, and on the way out kill the actors and remove the group;
//   - Ray's C++ default_worker on every node loads it from the job's code search path to
//     run `CohortSupervisor` actors. A supervisor spawns one `cohort worker` process, hands
//     it the instance secret on its standard input, and holds a lifeline pipe (the worker's
//     fd 3) whose end-of-file ends the worker when the actor dies. The worker then joins the
//     driver over Cohort's own channels; Ray carries placement and lifecycle only.
//
// Ray's API throws RayException for most failures (caught here and turned into messages)
// but aborts on internal checks: callers check what they can first (the cluster answers).

#include <ray/api.h>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

extern char **environ;

namespace {

std::string HostName() {
  char name[256] = {0};
  gethostname(name, sizeof(name) - 1);
  return name;
}

}  // namespace

/// Runs on a Ray node, in the bundle the driver reserved: starts and watches one worker.
class CohortSupervisor {
 public:
  CohortSupervisor(const std::vector<std::string> &argv, const std::string &secret) {
    if (argv.empty()) {
      error_ = "no command to run";
      return;
    }
    int input[2], lifeline[2];
    if (pipe2(input, O_CLOEXEC) != 0) {
      error_ = std::string("pipe: ") + strerror(errno);
      return;
    }
    if (pipe2(lifeline, O_CLOEXEC) != 0) {
      error_ = std::string("pipe: ") + strerror(errno);
      close(input[0]);
      close(input[1]);
      return;
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, input[0], 0);
    posix_spawn_file_actions_adddup2(&actions, lifeline[0], 3);
    std::vector<std::string> args = argv;
    args.push_back("--secret-stdin");
    args.push_back("--lifeline-fd");
    args.push_back("3");
    args.push_back("--parent-pid");
    args.push_back(std::to_string(getpid()));
    std::vector<char *> raw;
    for (auto &a : args) raw.push_back(const_cast<char *>(a.c_str()));
    raw.push_back(nullptr);
    pid_t pid = -1;
    int rc = posix_spawn(&pid, raw[0], &actions, nullptr, raw.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    close(input[0]);
    close(lifeline[0]);
    if (rc != 0) {
      close(input[1]);
      close(lifeline[1]);
      error_ = "cannot start " + args[0] + ": " + strerror(rc);
      return;
    }
    pid_ = pid;
    lifeline_ = lifeline[1];
    std::string line = secret + "\n";
    ssize_t written = write(input[1], line.data(), line.size());
    close(input[1]);
    if (written != static_cast<ssize_t>(line.size())) error_ = "cannot hand the worker its secret";
  }

  static CohortSupervisor *Create(std::vector<std::string> argv, std::string secret) {
    return new CohortSupervisor(argv, secret);
  }

  /// "pid N on HOST", or "error: why" when the worker could not start.
  std::string Started() {
    if (!error_.empty()) return "error: " + error_ + " (on " + HostName() + ")";
    return "pid " + std::to_string(pid_) + " on " + HostName();
  }

 private:
  pid_t pid_ = -1;
  // Held open for the actor's life: the worker exits when it closes.
  int lifeline_ = -1;
  std::string error_;
};

RAY_REMOTE(CohortSupervisor::Create, &CohortSupervisor::Started);

// MARK: - The driver's side

namespace {

ray::PlacementGroup group;
std::vector<ray::ActorHandle<CohortSupervisor>> actors;

int Fail(char *error, int length, const std::string &message) {
  if (error && length > 0) {
    std::strncpy(error, message.c_str(), length - 1);
    error[length - 1] = 0;
  }
  return -1;
}

int Copy(char *out, int length, const std::string &text) {
  if (out && length > 0) {
    std::strncpy(out, text.c_str(), length - 1);
    out[length - 1] = 0;
  }
  return 0;
}

}  // namespace

extern "C" {

/// Joins the Ray cluster at `address` (HOST:PORT of its GCS) as a driver on the node whose
/// address is `node_address` (a raylet must run there), whose workers load code from
/// `code_directory`. Returns 0, or -1 with a message in `error`.
int cohort_ray_connect(const char *address, const char *node_address, const char *code_directory, char *error,
                       int length) {
  try {
    if (ray::IsInitialized()) return 0;
    ray::RayConfig config;
    config.address = address;
    config.code_search_path = {code_directory};
    std::string program = "cohort", node = std::string("--ray_node_ip_address=") + node_address;
    char *argv[] = {program.data(), node.data(), nullptr};
    // Ray installs failure handlers that print a stack trace for SIGTERM and SIGINT too:
    // those two keep the driver's own handling (a clean end).
    struct sigaction term, interrupt;
    sigaction(SIGTERM, nullptr, &term);
    sigaction(SIGINT, nullptr, &interrupt);
    ray::Init(config, 2, argv);
    sigaction(SIGTERM, &term, nullptr);
    sigaction(SIGINT, &interrupt, nullptr);
    return 0;
  } catch (const std::exception &e) {
    return Fail(error, length, e.what());
  }
}

/// Creates the placement group: `bundles` bundles of `cpus` CPUs each (PACK), bundle 0
/// pinned to the node `driver_node` (Ray's `node:ADDRESS` resource), as the seed keeps the
/// driver's worker on the driver's machine.
int cohort_ray_create_group(int bundles, double cpus, const char *driver_node, const char *name,
                            char *error, int length) {
  try {
    ray::PlacementGroupCreationOptions options;
    options.name = name;
    options.strategy = ray::PlacementStrategy::PACK;
    for (int i = 0; i < bundles; i++) {
      std::unordered_map<std::string, double> bundle{{"CPU", cpus}};
      if (i == 0 && driver_node && *driver_node) bundle[std::string("node:") + driver_node] = 0.001;
      options.bundles.push_back(bundle);
    }
    group = ray::CreatePlacementGroup(options);
    return 0;
  } catch (const std::exception &e) {
    return Fail(error, length, e.what());
  }
}

/// Waits up to `seconds` for the group: 1 placed, 0 not yet, -1 failed.
int cohort_ray_wait_group(int seconds, char *error, int length) {
  try {
    return group.Wait(seconds) ? 1 : 0;
  } catch (const std::exception &e) {
    return Fail(error, length, e.what());
  }
}

/// Starts a supervisor actor in bundle `bundle` that runs `argv` (argv[0] a path on that
/// node) with the secret on its standard input; waits up to `timeout_ms` for it to say it
/// started the process. On success `info` holds "pid N on HOST".
int cohort_ray_start_worker(int bundle, double cpus, const char *const *argv, int argc, const char *secret,
                            int timeout_ms, char *info, int info_length, char *error, int length) {
  try {
    std::vector<std::string> args(argv, argv + argc);
    auto creator = ray::Actor(CohortSupervisor::Create);
    creator.SetPlacementGroup(group, bundle);
    creator.SetResource("CPU", cpus);
    creator.SetMaxRestarts(0);
    auto actor = creator.Remote(args, std::string(secret));
    auto started = actor.Task(&CohortSupervisor::Started).Remote();
    auto text = ray::Get(started, timeout_ms);
    actors.resize(actors.size() + 1);
    actors.back() = actor;
    if (text->rfind("error: ", 0) == 0) return Fail(error, length, text->substr(7));
    return Copy(info, info_length, *text);
  } catch (const std::exception &e) {
    return Fail(error, length, e.what());
  }
}

/// Kills the supervisor actors (their workers exit as their lifelines close: those that
/// stopped in order have already) and removes the placement group. Asynchronous in Ray, so
/// an unreachable node holds up nothing. Safe to call more than once.
void cohort_ray_release(void) {
  for (auto &actor : actors) {
    try {
      actor.Kill(true);
    } catch (const std::exception &) {
    }
  }
  actors.clear();
  if (!group.Empty()) {
    try {
      ray::RemovePlacementGroup(group.GetID());
    } catch (const std::exception &) {
    }
    group = ray::PlacementGroup();
  }
}

/// Leaves the cluster.
void cohort_ray_disconnect(void) {
  try {
    if (ray::IsInitialized()) ray::Shutdown();
  } catch (const std::exception &) {
  }
}

}  // extern "C"
