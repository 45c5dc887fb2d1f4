#include "container/memory_runtime.hpp"

#include "common/digest.hpp"
#include "common/log.hpp"
#include "common/time.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>
#include <stdexcept>

namespace warmstart::container {

struct MemoryRuntime::Waiter {
  explicit Waiter(net::any_io_executor ex, Duration deadline) : timer(std::move(ex), deadline) {}
  net::steady_timer timer;  // cancelled when the container exits or the engine goes down
  std::optional<int> exit_code;
  bool connection_lost = false;  // the engine went down while it waited
};

struct MemoryRuntime::Container {
  std::string id;
  std::string name;  // without the leading "/"
  ContainerSpec spec;
  std::string image_id;
  std::string status = "created";  // created | running | exited
  int exit_code = 0;
  bool oom = false;
  std::int64_t created_ms = 0;
  std::string started_at, finished_at;
  std::string logs;
  std::uint64_t run = 0;  // starts so far: a stale planned exit ignores a later run
  std::vector<std::shared_ptr<Waiter>> waiters;
};

struct MemoryRuntime::Image {
  ImageInfo info;  // repo_tags kept in step with tags_
};

struct MemoryRuntime::Subscription {
  EventFilter filter;
  EventHandler handler;
  std::int64_t since = 0;  // unix nano: older events are not delivered
  std::size_t next = 0;    // index in events_ of the next event to look at
  bool stopped = false;
};

class MemoryRuntime::SubscriptionHandle final : public EventSubscription {
 public:
  explicit SubscriptionHandle(std::shared_ptr<Subscription> s) : s_(std::move(s)) {}
  ~SubscriptionHandle() override { stop(); }
  void stop() override { s_->stopped = true; }

 private:
  std::shared_ptr<Subscription> s_;
};

namespace {

bool has(const std::vector<std::string>& list, const std::string& value) {
  return list.empty() || std::find(list.begin(), list.end(), value) != list.end();
}

// Docker's label filter: every "k=v" or "k" must be among `labels`.
bool labels_match(const std::vector<std::string>& filters, const Labels& labels) {
  for (const auto& f : filters) {
    auto eq = f.find('=');
    auto it = labels.find(f.substr(0, eq));
    if (it == labels.end()) return false;
    if (eq != std::string::npos && it->second != f.substr(eq + 1)) return false;
  }
  return true;
}

bool event_matches(const EventFilter& filter, const Event& e) {
  return has(filter.types, e.type) && has(filter.events, e.action) &&
         labels_match(filter.labels, e.attributes);
}

// "repo" -> "repo:latest"; ids and "repo:tag" unchanged.
std::string normalize_ref(const std::string& ref) {
  if (ref.rfind("sha256:", 0) == 0) return ref;
  auto slash = ref.rfind('/');
  auto colon = ref.rfind(':');
  if (colon == std::string::npos || (slash != std::string::npos && colon < slash)) {
    return ref + ":latest";
  }
  return ref;
}

std::string short_id(const std::string& id) {
  std::string bare = id.rfind("sha256:", 0) == 0 ? id.substr(7) : id;
  return bare.substr(0, 12);
}

int signal_exit_code(const std::string& signal) {
  if (signal == "SIGTERM" || signal == "TERM" || signal == "15") return 143;
  if (signal == "SIGINT" || signal == "INT" || signal == "2") return 130;
  return 137;  // SIGKILL and anything else that kills
}

// Reads one Dockerfile value at `pos`: quoted ("..." with \ escapes, as
// snapshots' import_changes writes them) or bare up to `stop`.
std::string read_value(std::string_view text, std::size_t& pos, char stop) {
  std::string out;
  if (pos < text.size() && text[pos] == '"') {
    for (++pos; pos < text.size() && text[pos] != '"'; ++pos) {
      if (text[pos] == '\\' && pos + 1 < text.size()) ++pos;
      out += text[pos];
    }
    ++pos;  // the closing quote
    return out;
  }
  while (pos < text.size() && text[pos] != stop) out += text[pos++];
  return out;
}

std::vector<std::string> json_list(std::string_view text) {
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (!j.is_array()) return {std::string(text)};
  return j.get<std::vector<std::string>>();
}

// The config an import's `changes` give an image (ENV, CMD, ENTRYPOINT,
// USER, WORKDIR, LABEL: what DockerClient and the snapshot cache send).
ImageConfig config_from_changes(const std::vector<std::string>& changes) {
  ImageConfig config;
  for (const auto& change : changes) {
    auto space = change.find(' ');
    std::string instruction = change.substr(0, space);
    std::string_view rest =
        space == std::string::npos ? "" : std::string_view(change).substr(space + 1);
    std::size_t pos = 0;
    if (instruction == "ENV" || instruction == "LABEL") {
      std::string key = read_value(rest, pos, '=');
      ++pos;  // '='
      std::string value = read_value(rest, pos, '\0');
      if (instruction == "ENV") config.env.push_back(key + "=" + value);
      if (instruction == "LABEL") config.labels[key] = value;
    } else if (instruction == "CMD") {
      config.cmd = json_list(rest);
    } else if (instruction == "ENTRYPOINT") {
      config.entrypoint = json_list(rest);
    } else if (instruction == "USER") {
      config.user = std::string(rest);
    } else if (instruction == "WORKDIR") {
      config.working_dir = std::string(rest);
    }
  }
  return config;
}

}  // namespace

std::string_view to_string(MemoryRuntime::Op op) {
  using Op = MemoryRuntime::Op;
  switch (op) {
    case Op::ping:
      return "ping";
    case Op::info:
      return "info";
    case Op::inspect_image:
      return "image inspect";
    case Op::remove_image:
      return "image remove";
    case Op::list_images:
      return "image list";
    case Op::create_container:
      return "container create";
    case Op::start_container:
      return "container start";
    case Op::stop_container:
      return "container stop";
    case Op::kill_container:
      return "container kill";
    case Op::wait_container:
      return "container wait";
    case Op::inspect_container:
      return "container inspect";
    case Op::container_logs:
      return "container logs";
    case Op::remove_container:
      return "container remove";
    case Op::list_containers:
      return "container list";
    case Op::commit_container:
      return "container commit";
    case Op::export_container:
      return "container export";
    case Op::import_image:
      return "image import";
  }
  return "?";
}

std::shared_ptr<MemoryRuntime> MemoryRuntime::create(net::any_io_executor executor,
                                                     MemoryRuntimeOptions options) {
  return std::shared_ptr<MemoryRuntime>(new MemoryRuntime(std::move(executor), std::move(options)));
}

MemoryRuntime::MemoryRuntime(net::any_io_executor executor, MemoryRuntimeOptions options)
    : executor_(std::move(executor)), options_(std::move(options)) {}

// ---------------------------------------------------------------- scripting

std::string MemoryRuntime::add_image(const std::string& ref, ImageInfo info) {
  if (info.id.empty()) info.id = new_id("image");
  if (info.layer_count == 0) info.layer_count = 1;
  Image& image = images_[info.id];
  if (image.info.id.empty()) {
    info.repo_tags.clear();
    image.info = std::move(info);
  }
  const std::string tag = normalize_ref(ref);
  if (auto old = tags_.find(tag); old != tags_.end())
    std::erase(images_[old->second].info.repo_tags, tag);
  tags_[tag] = image.info.id;
  image.info.repo_tags.push_back(tag);
  return image.info.id;
}

void MemoryRuntime::delete_image(const std::string& ref) {
  Image* image = find_image(ref);
  if (image == nullptr) throw std::logic_error("MemoryRuntime::delete_image: no image " + ref);
  const std::string id = image->info.id;
  std::erase_if(tags_, [&](const auto& t) { return t.second == id; });
  images_.erase(id);
  emit("image", "delete", id, {{"name", ref}});
}

void MemoryRuntime::exit(const std::string& id_or_name, int exit_code, bool oom) {
  Container* c = find_container(id_or_name);
  if (c == nullptr) throw std::logic_error("MemoryRuntime::exit: no container " + id_or_name);
  if (c->status == "running") finish_run(*c, exit_code, oom);
}

void MemoryRuntime::set_auto_exit(int exit_code, Duration after) {
  set_exit_plan([exit_code, after](const ContainerSpec&) {
    ExitPlan plan;
    plan.exit_code = exit_code;
    plan.after = after;
    return std::optional<ExitPlan>(plan);
  });
}

void MemoryRuntime::set_exit_plan(
    std::function<std::optional<ExitPlan>(const ContainerSpec&)> plan) {
  exit_plan_ = std::move(plan);
}

void MemoryRuntime::clear_auto_exit() {
  exit_plan_ = nullptr;
}

void MemoryRuntime::append_logs(const std::string& id_or_name, const std::string& text) {
  Container* c = find_container(id_or_name);
  if (c == nullptr)
    throw std::logic_error("MemoryRuntime::append_logs: no container " + id_or_name);
  c->logs += text;
}

void MemoryRuntime::fail_next(Op op, Fault fault, int times) {
  for (int i = 0; i < times; ++i) scripted_[op].push_back(Scripted{fault, Duration(0)});
}

void MemoryRuntime::slow_next(Op op, Duration delay, int times) {
  for (int i = 0; i < times; ++i) scripted_[op].push_back(Scripted{std::nullopt, delay});
}

void MemoryRuntime::set_latency(Op op, Duration latency) {
  if (latency.count() > 0) {
    latency_[op] = latency;
  } else {
    latency_.erase(op);
  }
}

void MemoryRuntime::set_down(bool down) {
  down_ = down;
  if (!down) {
    deliver();  // resume: what the subscriptions missed, in order
    return;
  }
  // A wait is a long-lived request: it breaks with the engine.
  for (auto& [id, c] : containers_) {
    for (auto& w : c.waiters) {
      w->connection_lost = true;
      w->timer.cancel();
    }
    c.waiters.clear();
  }
}

// --------------------------------------------------------------- inspection

std::size_t MemoryRuntime::calls(Op op) const {
  auto it = calls_.find(op);
  return it == calls_.end() ? 0 : it->second;
}

std::vector<ContainerInfo> MemoryRuntime::containers() const {
  std::vector<ContainerInfo> out;
  for (const auto& [id, c] : containers_) out.push_back(info_of(c));
  return out;
}

std::optional<ContainerInfo> MemoryRuntime::container(const std::string& id_or_name) const {
  const Container* c = find_container(id_or_name);
  if (c == nullptr) return std::nullopt;
  return info_of(*c);
}

std::optional<ContainerSpec> MemoryRuntime::spec_of(const std::string& id_or_name) const {
  const Container* c = find_container(id_or_name);
  if (c == nullptr) return std::nullopt;
  return c->spec;
}

std::vector<ImageInfo> MemoryRuntime::images() const {
  std::vector<ImageInfo> out;
  for (const auto& [id, image] : images_) out.push_back(image.info);
  return out;
}

std::optional<ImageInfo> MemoryRuntime::image(const std::string& ref) const {
  const Image* image = find_image(ref);
  if (image == nullptr) return std::nullopt;
  return image->info;
}

std::int64_t MemoryRuntime::now_ms() const {
  return options_.now_ms ? options_.now_ms() : unix_ms_now();
}

// ------------------------------------------------------- around every call

// `subject` (a ref, id or name for the error messages) is a view: callers pass
// literals, and a std::string temporary in a co_await expression is what g++ 12
// destroys twice.
awaitable<void> MemoryRuntime::begin(Op op, std::string_view subject) {
  co_await net::post(executor_, use_awaitable);  // a request never completes inline
  ++calls_[op];
  if (down_) throw_fault(op, Fault::unreachable, subject);
  if (auto latency = latency_.find(op); latency != latency_.end()) {
    co_await sleep_for(latency->second);
  }
  auto& queue = scripted_[op];
  if (queue.empty()) co_return;
  Scripted next = queue.front();
  queue.pop_front();
  if (next.delay.count() > 0) co_await sleep_for(next.delay);
  if (next.fault == Fault::hang) {
    // Cancellable: a caller's with_deadline ends it first.
    co_await sleep_for(options_.docker_timeout);
    throw TransportError(operation(op), TransportError::Kind::timeout,
                         "deadline of " + std::to_string(options_.docker_timeout.count()) +
                             " ms exceeded (MemoryRuntime: hang)");
  }
  if (next.fault) throw_fault(op, *next.fault, subject);
}

void MemoryRuntime::throw_fault(Op op, Fault fault, std::string_view view) {
  const std::string name = operation(op);
  const std::string subject(view);
  switch (fault) {
    case Fault::image_not_found:
      throw ApiError(name, 404, "No such image: " + subject);
    case Fault::not_found:
      throw ApiError(name, 404, "No such container: " + subject);
    case Fault::conflict:
      throw ApiError(name, 409,
                     "Conflict. The container name \"/" + subject +
                         "\" is already in use by container \"" + std::string(64, '0') +
                         "\". You have to remove (or rename) that container to be able to reuse "
                         "that name.");
    case Fault::server_error:
      throw ApiError(name, 500, "internal server error (MemoryRuntime)");
    case Fault::unreachable:
    case Fault::hang:
      break;
  }
  throw TransportError(name, TransportError::Kind::connect,
                       "cannot connect to the Docker engine at unix:///memory-runtime.sock "
                       "(Couldn't connect to server)");
}

const char* MemoryRuntime::operation(Op op) {
  return to_string(op).data();  // string literals: NUL-terminated
}

// -------------------------------------------------------------- operations

awaitable<std::string> MemoryRuntime::ping() {
  auto self = shared_from_this();
  co_await begin(Op::ping, "");
  co_return options_.api_version;
}

awaitable<EngineInfo> MemoryRuntime::info() {
  auto self = shared_from_this();
  co_await begin(Op::info, "");
  EngineInfo info;
  info.id = options_.engine_id;
  info.server_version = "memory";
  info.api_version = options_.api_version;
  info.storage_driver = "memory";
  co_return info;
}

awaitable<ImageInfo> MemoryRuntime::inspect_image(std::string ref) {
  auto self = shared_from_this();
  co_await begin(Op::inspect_image, ref);
  const Image* image = find_image(ref);
  if (image == nullptr) throw ApiError("image inspect", 404, "No such image: " + ref);
  co_return image->info;
}

awaitable<void> MemoryRuntime::remove_image(std::string ref, bool force) {
  auto self = shared_from_this();
  co_await begin(Op::remove_image, ref);
  do_remove_image(ref, force);
}

awaitable<std::vector<ImageSummary>> MemoryRuntime::list_images(std::vector<std::string> labels) {
  auto self = shared_from_this();
  co_await begin(Op::list_images, "");
  std::vector<ImageSummary> out;
  for (const auto& [id, image] : images_) {
    const ImageInfo& i = image.info;
    if (!labels_match(labels, i.config.labels)) continue;
    out.push_back(ImageSummary{i.id, i.repo_tags, i.size_bytes, i.created_unix, i.config.labels});
  }
  co_return out;
}

awaitable<std::string> MemoryRuntime::create_container(ContainerSpec spec) {
  auto self = shared_from_this();
  co_await begin(Op::create_container, spec.name);
  co_return do_create(spec);
}

awaitable<void> MemoryRuntime::start_container(std::string id) {
  auto self = shared_from_this();
  co_await begin(Op::start_container, id);
  do_start(container_or_404("container start", id));
}

awaitable<void> MemoryRuntime::stop_container(std::string id, std::chrono::seconds) {
  auto self = shared_from_this();
  co_await begin(Op::stop_container, id);
  Container& c = container_or_404("container stop", id);
  if (c.status != "running") co_return;  // 304: already stopped
  finish_run(c, options_.stop_exit_code, false);
  emit("container", "stop", c.id, c.spec.labels);
}

awaitable<void> MemoryRuntime::kill_container(std::string id, std::string signal) {
  auto self = shared_from_this();
  co_await begin(Op::kill_container, id);
  Container& c = container_or_404("container kill", id);
  if (c.status != "running") {
    throw ApiError("container kill", 409,
                   "Cannot kill container: " + id + ": Container " + c.id + " is not running");
  }
  emit("container", "kill", c.id, c.spec.labels);
  finish_run(c, signal_exit_code(signal), false);
}

awaitable<int> MemoryRuntime::wait_container(std::string id, Duration deadline) {
  auto self = shared_from_this();
  co_await begin(Op::wait_container, id);
  co_return co_await wait_for_exit(id, deadline);
}

awaitable<ContainerInfo> MemoryRuntime::inspect_container(std::string id) {
  auto self = shared_from_this();
  co_await begin(Op::inspect_container, id);
  co_return info_of(container_or_404("container inspect", id));
}

awaitable<Logs> MemoryRuntime::container_logs(std::string id, std::size_t max_bytes) {
  auto self = shared_from_this();
  co_await begin(Op::container_logs, id);
  const std::string& all = container_or_404("container logs", id).logs;
  Logs logs;
  logs.truncated = all.size() > max_bytes;
  logs.combined = logs.truncated ? all.substr(all.size() - max_bytes) : all;
  logs.stdout_text = logs.combined;
  co_return logs;
}

awaitable<void> MemoryRuntime::remove_container(std::string id, bool force) {
  auto self = shared_from_this();
  co_await begin(Op::remove_container, id);
  do_remove(id, force);
}

awaitable<std::vector<ContainerSummary>> MemoryRuntime::list_containers(
    std::vector<std::string> labels, bool all) {
  auto self = shared_from_this();
  co_await begin(Op::list_containers, "");
  std::vector<ContainerSummary> out;
  for (const auto& [id, c] : containers_) {
    if ((!all && c.status != "running") || !labels_match(labels, c.spec.labels)) continue;
    ContainerSummary s;
    s.id = c.id;
    s.names = {"/" + c.name};
    s.image = c.spec.image;
    s.image_id = c.image_id;
    s.state = c.status;
    s.status = c.status == "running"  ? std::string("Up")
               : c.status == "exited" ? "Exited (" + std::to_string(c.exit_code) + ")"
                                      : std::string("Created");
    s.created_unix = c.created_ms / 1000;
    s.labels = c.spec.labels;
    out.push_back(std::move(s));
  }
  co_return out;
}

awaitable<std::string> MemoryRuntime::commit_container(std::string id, CommitOptions options) {
  auto self = shared_from_this();
  co_await begin(Op::commit_container, id);
  const Container& c = container_or_404("container commit", id);
  const Image* source = find_image(c.image_id);
  ImageConfig config = options.config.value_or(source ? source->info.config : ImageConfig{});
  // Scrubbed (export + import) is flattened to one layer, like DockerClient's.
  const bool layered = !(options.config && options.scrub_container_config);
  const std::size_t base_layers = source ? source->info.layer_count : 1;
  const std::int64_t size = (source ? source->info.size_bytes : 0) + 1024;
  co_return new_image(options.repo, options.tag, std::move(config), layered ? base_layers + 1 : 1,
                      size);
}

awaitable<void> MemoryRuntime::export_container(std::string id, std::string path) {
  auto self = shared_from_this();
  co_await begin(Op::export_container, id);
  const Container& c = container_or_404("container export", id);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << "MemoryRuntime export of container " << c.id << " (image " << c.image_id << ")\n";
  if (!out) throw DockerError("container export", "container export: cannot write " + path);
}

awaitable<std::string> MemoryRuntime::import_image(std::string path, std::string repo,
                                                   std::string tag,
                                                   std::vector<std::string> changes) {
  auto self = shared_from_this();
  co_await begin(Op::import_image, repo);
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw DockerError("image import", "image import: cannot read " + path);
  const auto size = static_cast<std::int64_t>(in.tellg());
  co_return new_image(repo, tag, config_from_changes(changes), 1, size);
}

// The streamed flatten: one layer with the given config; the filter is not
// run (the double holds no file contents; tar_filter_test.cpp covers it).
awaitable<FilteredImport> MemoryRuntime::export_import(std::string container_id, std::string repo,
                                                       std::string tag,
                                                       std::vector<std::string> changes,
                                                       TarFilterOptions /*filter*/) {
  auto self = shared_from_this();
  co_await begin(Op::export_container, container_id);
  const Container& c = container_or_404("container export", container_id);
  const Image* source = find_image(c.image_id);
  const std::int64_t size = (source ? source->info.size_bytes : 0) + 1024;
  co_await begin(Op::import_image, repo);
  FilteredImport out;
  out.image_id = new_image(repo, tag, config_from_changes(changes), 1, size);
  out.bytes_in = out.bytes_out = static_cast<std::uint64_t>(size);
  co_return out;
}

EventSubscriptionPtr MemoryRuntime::subscribe_events(EventFilter filter,
                                                     std::int64_t since_unix_nano,
                                                     EventHandler handler) {
  auto s = std::make_shared<Subscription>();
  s->filter = std::move(filter);
  s->handler = std::move(handler);
  // "Now", pinned at subscribe time, like DockerClient: after every event so
  // far, even those stamped within this millisecond.
  s->since =
      since_unix_nano != 0 ? since_unix_nano : std::max(now_ms() * 1'000'000, last_event_nano_ + 1);
  subscriptions_.push_back(s);
  if (!delivery_posted_) {
    delivery_posted_ = true;
    net::post(executor_, [weak = weak_from_this()] {
      if (auto self = weak.lock()) self->deliver();
    });
  }
  return std::make_unique<SubscriptionHandle>(std::move(s));
}

// ----------------------------------------------------------------- bodies

std::string MemoryRuntime::do_create(const ContainerSpec& spec) {
  const Image* image = find_image(spec.image);
  if (image == nullptr) throw ApiError("container create", 404, "No such image: " + spec.image);
  if (!spec.name.empty()) {
    if (const Container* other = find_container(spec.name); other && other->name == spec.name) {
      throw ApiError("container create", 409,
                     "Conflict. The container name \"/" + spec.name +
                         "\" is already in use by container \"" + other->id +
                         "\". You have to remove (or rename) that container to be able to reuse "
                         "that name.");
    }
  }
  Container c;
  c.id = new_id("container").substr(7);  // container ids carry no "sha256:"
  c.name = spec.name.empty() ? "memory_" + c.id.substr(0, 8) : spec.name;
  c.spec = spec;
  c.image_id = image->info.id;
  c.created_ms = now_ms();
  const std::string id = c.id;
  containers_.emplace(id, std::move(c));
  Labels attributes = spec.labels;
  attributes["image"] = spec.image;
  attributes["name"] = containers_.at(id).name;
  emit("container", "create", id, std::move(attributes));
  return id;
}

void MemoryRuntime::do_start(Container& c) {
  if (c.status == "running") return;  // 304: start is idempotent
  c.status = "running";
  c.exit_code = 0;
  c.oom = false;
  c.started_at = rfc3339(now_ms());
  c.finished_at.clear();
  ++c.run;
  emit("container", "start", c.id, c.spec.labels);
  plan_exit(c);
}

void MemoryRuntime::do_remove(const std::string& id, bool force) {
  Container& c = container_or_404("container remove", id);
  if (c.status == "running" && !force) {
    throw ApiError("container remove", 409,
                   "You cannot remove a running container " + c.id +
                       ". Stop the container before attempting removal or force remove");
  }
  if (c.status == "running") {
    emit("container", "kill", c.id, c.spec.labels);
    finish_run(c, 137, false);
  }
  const std::string cid = c.id;
  Labels labels = c.spec.labels;
  containers_.erase(cid);
  emit("container", "destroy", cid, std::move(labels));
}

// Docker's rules, simplified: a tag of a multi-tag image is only untagged;
// an image used by a container needs force; one used by a running container
// cannot be deleted (by tag + force it is only untagged, left dangling).
void MemoryRuntime::do_remove_image(const std::string& ref, bool force) {
  Image* image = find_image(ref);
  if (image == nullptr) throw ApiError("image remove", 404, "No such image: " + ref);
  const std::string id = image->info.id;
  const bool by_tag = ref.rfind("sha256:", 0) != 0;
  const Container* user = nullptr;
  const Container* runner = nullptr;
  for (const auto& [cid, c] : containers_) {
    if (c.image_id != id) continue;
    user = &c;
    if (c.status == "running") runner = &c;
  }
  auto untag = [&] {
    const std::string tag = normalize_ref(ref);
    tags_.erase(tag);
    std::erase(image->info.repo_tags, tag);
    emit("image", "untag", id, {{"name", ref}});
  };
  if (by_tag && image->info.repo_tags.size() > 1) return untag();
  if (user != nullptr && !force) {
    throw ApiError("image remove", 409,
                   "conflict: unable to remove repository reference \"" + ref +
                       "\" (must force) - container " + short_id(user->id) +
                       " is using its referenced image " + short_id(id));
  }
  if (runner != nullptr && by_tag) return untag();
  if (runner != nullptr) {
    throw ApiError("image remove", 409,
                   "conflict: unable to delete " + short_id(id) +
                       " (cannot be forced) - image is being used by running container " +
                       short_id(runner->id));
  }
  std::erase_if(tags_, [&](const auto& t) { return t.second == id; });
  images_.erase(id);
  emit("image", "delete", id, {{"name", ref}});
}

std::string MemoryRuntime::new_image(const std::string& repo, const std::string& tag,
                                     ImageConfig config, std::size_t layers, std::int64_t size) {
  ImageInfo info;
  info.id = new_id("image");
  info.layer_count = layers;
  info.size_bytes = size;
  info.created_unix = now_ms() / 1000;
  info.config = std::move(config);
  if (repo.empty()) {
    images_[info.id].info = info;  // dangling: no tag
    return info.id;
  }
  return add_image(repo + ":" + (tag.empty() ? "latest" : tag), std::move(info));
}

// Docker's default wait condition ("not-running"): an exited or never
// started container answers at once.
awaitable<int> MemoryRuntime::wait_for_exit(const std::string& id, Duration deadline) {
  Container& c = container_or_404("container wait", id);
  if (c.status != "running") co_return c.exit_code;
  auto waiter = std::make_shared<Waiter>(executor_, deadline);
  c.waiters.push_back(waiter);
  const std::string cid = c.id;
  co_await waiter->timer.async_wait(net::as_tuple(use_awaitable));
  if (waiter->exit_code) co_return *waiter->exit_code;
  if (waiter->connection_lost) {
    throw TransportError("container wait", TransportError::Kind::io,
                         "connection to the Docker engine lost while waiting");
  }
  if (Container* still = find_container(cid)) std::erase(still->waiters, waiter);
  if ((co_await net::this_coro::cancellation_state).cancelled() != net::cancellation_type::none) {
    throw boost::system::system_error(net::error::operation_aborted);
  }
  throw TransportError("container wait", TransportError::Kind::timeout,
                       "deadline of " + std::to_string(deadline.count()) + " ms exceeded");
}

// ---------------------------------------------------------------- helpers

MemoryRuntime::Container& MemoryRuntime::container_or_404(const char* op,
                                                          const std::string& id_or_name) {
  Container* c = find_container(id_or_name);
  if (c == nullptr) throw ApiError(op, 404, "No such container: " + id_or_name);
  return *c;
}

MemoryRuntime::Image* MemoryRuntime::find_image(const std::string& ref) {
  return const_cast<Image*>(std::as_const(*this).find_image(ref));
}

const MemoryRuntime::Image* MemoryRuntime::find_image(const std::string& ref) const {
  if (auto it = images_.find(ref); it != images_.end()) return &it->second;
  if (auto it = images_.find("sha256:" + ref); it != images_.end()) return &it->second;
  auto tag = tags_.find(normalize_ref(ref));
  return tag == tags_.end() ? nullptr : &images_.at(tag->second);
}

MemoryRuntime::Container* MemoryRuntime::find_container(const std::string& id_or_name) {
  return const_cast<Container*>(std::as_const(*this).find_container(id_or_name));
}

// By id, name ("x" or "/x") or unique id prefix, like the engine.
const MemoryRuntime::Container* MemoryRuntime::find_container(const std::string& id_or_name) const {
  if (id_or_name.empty()) return nullptr;
  if (auto it = containers_.find(id_or_name); it != containers_.end()) return &it->second;
  const std::string name = id_or_name.front() == '/' ? id_or_name.substr(1) : id_or_name;
  const Container* by_prefix = nullptr;
  int prefixed = 0;
  for (const auto& [id, c] : containers_) {
    if (c.name == name) return &c;
    if (id.rfind(id_or_name, 0) == 0) {
      by_prefix = &c;
      ++prefixed;
    }
  }
  return prefixed == 1 ? by_prefix : nullptr;
}

ContainerInfo MemoryRuntime::info_of(const Container& c) const {
  ContainerInfo info;
  info.id = c.id;
  info.name = c.name;
  info.image_id = c.image_id;
  info.image = c.spec.image;
  info.labels = c.spec.labels;
  info.state.status = c.status;
  info.state.running = c.status == "running";
  info.state.oom_killed = c.oom;
  info.state.exit_code = c.exit_code;
  info.state.pid = info.state.running ? 4242 : 0;
  info.state.started_at = c.started_at;
  info.state.finished_at = c.finished_at;
  return info;
}

void MemoryRuntime::finish_run(Container& c, int exit_code, bool oom) {
  c.status = "exited";
  c.exit_code = exit_code;
  c.oom = oom;
  c.finished_at = rfc3339(now_ms());
  if (oom) emit("container", "oom", c.id, c.spec.labels);
  Labels attributes = c.spec.labels;
  attributes["exitCode"] = std::to_string(exit_code);
  attributes["name"] = c.name;
  attributes["image"] = c.spec.image;
  emit("container", "die", c.id, std::move(attributes));
  for (auto& w : c.waiters) {
    w->exit_code = exit_code;
    w->timer.cancel();
  }
  c.waiters.clear();
}

// The exit plan of a container that just started, run later on the executor.
void MemoryRuntime::plan_exit(Container& c) {
  if (!exit_plan_) return;
  std::optional<ExitPlan> plan = exit_plan_(c.spec);
  if (!plan) return;
  c.logs += plan->logs;
  auto end = [weak = weak_from_this(), id = c.id, run = c.run, plan = *plan] {
    auto self = weak.lock();
    if (!self) return;
    Container* target = self->find_container(id);
    if (target && target->status == "running" && target->run == run) {
      self->finish_run(*target, plan.exit_code, plan.oom);
    }
  };
  if (plan->after.count() == 0) {
    net::post(executor_, std::move(end));
    return;
  }
  auto timer = std::make_shared<net::steady_timer>(executor_, plan->after);
  timer->async_wait([timer, end](boost::system::error_code ec) {
    if (!ec) end();
  });
}

void MemoryRuntime::emit(const std::string& type, const std::string& action, const std::string& id,
                         Labels attributes) {
  // Unique, increasing times: the engine's resume cursor relies on them.
  last_event_nano_ = std::max(last_event_nano_ + 1, now_ms() * 1'000'000);
  events_.push_back(Event{type, action, id, std::move(attributes), last_event_nano_});
  lost_.push_back(losing_events_);
  if (delivery_posted_) return;
  delivery_posted_ = true;
  net::post(executor_, [weak = weak_from_this()] {
    if (auto self = weak.lock()) self->deliver();
  });
}

// Hands every subscription what it has not seen yet, unless the engine is
// down (then they catch up once it is back).
void MemoryRuntime::deliver() {
  delivery_posted_ = false;
  if (down_) return;
  std::erase_if(subscriptions_, [](const auto& s) { return s->stopped; });
  const auto subscriptions = subscriptions_;  // a handler may subscribe
  for (const auto& s : subscriptions) {
    while (!s->stopped && s->next < events_.size()) {
      const bool lost = lost_[s->next];
      const Event event = events_[s->next++];  // a handler may emit (and grow events_)
      if (lost || event.time_nano < s->since || !event_matches(s->filter, event)) continue;
      try {
        s->handler(event);
      } catch (const std::exception& e) {
        log::error("memory runtime: events handler threw", {{"error", e.what()}});
      }
    }
  }
}

std::string MemoryRuntime::new_id(const std::string& what) {
  return "sha256:" + sha256_hex(what + "-" + std::to_string(++next_id_));
}

}  // namespace warmstart::container
