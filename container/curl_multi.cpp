#include "container/curl_multi.hpp"

#include "common/log.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <stdexcept>
#include <system_error>

namespace warmstart::container {
namespace {

// curl_global_init is not thread-safe; run it once before the first multi.
void global_init_once() {
  static const bool done = [] {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
      throw std::runtime_error("curl_global_init failed");
    }
    return true;
  }();
  (void)done;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

}  // namespace

struct CurlMulti::Socket {
  explicit Socket(const net::any_io_executor& executor) : descriptor(executor) {}
  net::posix::stream_descriptor descriptor;
  int wanted = 0;  // CURL_POLL_IN | CURL_POLL_OUT as last asked by curl
  bool reading = false;
  bool writing = false;
  bool closed = false;  // curl closed it; waits still queued must not act
};

struct CurlMulti::Transfer {
  ~Transfer() {
    if (easy != nullptr) curl_easy_cleanup(easy);
    if (header_list != nullptr) curl_slist_free_all(header_list);
    if (upload != nullptr) std::fclose(upload);
  }
  std::uint64_t id = 0;
  CURL* easy = nullptr;
  curl_slist* header_list = nullptr;
  std::FILE* upload = nullptr;
  HttpRequest request;
  HttpResult result;
  std::size_t error_body_limit = 0;
  bool body_route_decided = false;
  bool body_to_sink = false;
  char error_buffer[CURL_ERROR_SIZE] = {};
  net::any_completion_handler<Signature> handler;
  net::cancellation_slot slot;
};

std::shared_ptr<CurlMulti> CurlMulti::create(net::any_io_executor executor,
                                             CurlMultiOptions options) {
  global_init_once();
  return std::shared_ptr<CurlMulti>(new CurlMulti(std::move(executor), std::move(options)));
}

CurlMulti::CurlMulti(net::any_io_executor executor, CurlMultiOptions options)
    : executor_(std::move(executor)), options_(std::move(options)), timer_(executor_) {
  multi_ = curl_multi_init();
  if (multi_ == nullptr) throw std::runtime_error("curl_multi_init failed");
  curl_multi_setopt(multi_, CURLMOPT_SOCKETFUNCTION, &CurlMulti::socket_callback);
  curl_multi_setopt(multi_, CURLMOPT_SOCKETDATA, this);
  curl_multi_setopt(multi_, CURLMOPT_TIMERFUNCTION, &CurlMulti::timer_callback);
  curl_multi_setopt(multi_, CURLMOPT_TIMERDATA, this);
  curl_multi_setopt(multi_, CURLMOPT_MAXCONNECTS, options_.max_cached_connections);
}

CurlMulti::~CurlMulti() {
  // Like an Asio I/O object: pending operations complete with operation_aborted.
  while (!transfers_.empty()) {
    finish(transfers_.begin()->first, net::error::operation_aborted, CURLE_ABORTED_BY_CALLBACK);
  }
  for (CURL* e : idle_easy_) curl_easy_cleanup(e);
  idle_easy_.clear();
  // Closes the cached connections through close_socket, so sockets_ must still exist.
  curl_multi_cleanup(multi_);
  timer_.cancel();
}

void CurlMulti::start(HttpRequest request, net::any_completion_handler<Signature> handler) {
  auto t = std::make_unique<Transfer>();
  t->id = ++next_transfer_id_;
  t->request = std::move(request);
  // swap, not move-assignment: Boost 1.81's any_completion_handler::operator=(&&)
  // wraps the handler in itself and recurses without end.
  t->handler.swap(handler);
  t->error_body_limit = options_.max_error_body_bytes;
  t->easy = take_easy();

  auto fail_now = [&](CURLcode code, std::string error) {
    t->result.code = code;
    t->result.error = std::move(error);
    net::post(executor_, [h = std::move(t->handler), r = std::move(t->result)]() mutable {
      std::move(h)(boost::system::error_code{}, std::move(r));
    });
  };
  if (t->easy == nullptr) return fail_now(CURLE_OUT_OF_MEMORY, "curl_easy_init failed");

  CURL* e = t->easy;
  const HttpRequest& r = t->request;
  std::string url = "http://localhost" + r.target;  // host is irrelevant over a unix socket
  curl_easy_setopt(e, CURLOPT_URL, url.c_str());
  curl_easy_setopt(e, CURLOPT_UNIX_SOCKET_PATH, options_.socket_path.c_str());
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http");
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_PRIVATE, t.get());
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->error_buffer);
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
                   static_cast<long>(options_.connect_timeout.count()));
  if (r.timeout.count() > 0) {
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, static_cast<long>(r.timeout.count()));
  }
  curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, &CurlMulti::open_socket);
  curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, this);
  curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, &CurlMulti::close_socket);
  curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, this);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, &CurlMulti::write_callback);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, t.get());
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, &CurlMulti::header_callback);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, t.get());

  // Large uploads must not wait a second for a "100 Continue" the engine never sends.
  t->header_list = curl_slist_append(t->header_list, "Expect:");
  for (const auto& h : r.headers) t->header_list = curl_slist_append(t->header_list, h.c_str());
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->header_list);

  if (r.buffer_bytes > 0) {
    curl_easy_setopt(e, CURLOPT_BUFFERSIZE, r.buffer_bytes);
    curl_easy_setopt(e, CURLOPT_UPLOAD_BUFFERSIZE, r.buffer_bytes);
  }
  if (r.method == "POST" || r.method == "PUT") {
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    if (r.body_source) {
      // No size: curl sends the body chunked, as it comes.
      curl_easy_setopt(e, CURLOPT_READFUNCTION, &CurlMulti::read_callback);
      curl_easy_setopt(e, CURLOPT_READDATA, t.get());
      curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(-1));
      t->header_list = curl_slist_append(t->header_list, "Transfer-Encoding: chunked");
      curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->header_list);
    } else if (!r.body_file.empty()) {
      t->upload = std::fopen(r.body_file.c_str(), "rb");
      if (t->upload == nullptr) {
        return fail_now(CURLE_READ_ERROR, "cannot open " + r.body_file + ": " +
                                              std::generic_category().message(errno));
      }
      std::fseek(t->upload, 0, SEEK_END);
      curl_off_t size = std::ftell(t->upload);
      std::fseek(t->upload, 0, SEEK_SET);
      curl_easy_setopt(e, CURLOPT_READFUNCTION, &CurlMulti::read_callback);
      curl_easy_setopt(e, CURLOPT_READDATA, t.get());
      curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, size);
    } else {
      curl_easy_setopt(e, CURLOPT_POSTFIELDS, r.body.data());
      curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(r.body.size()));
    }
    if (r.method == "PUT") curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, "PUT");
  } else if (r.method == "HEAD") {
    curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
  } else if (r.method != "GET") {
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, r.method.c_str());
  }

  t->slot = net::get_associated_cancellation_slot(t->handler);
  if (t->slot.is_connected()) {
    // By id, not by pointer: a stale slot handler must never hit a later transfer.
    t->slot.assign([weak = weak_from_this(), id = t->id](net::cancellation_type_t) {
      if (auto self = weak.lock()) {
        for (const auto& [easy, transfer] : self->transfers_) {
          if (transfer->id == id) {
            transfer->slot = {};  // we are inside the slot's handler: do not clear it
            self->cancel(easy);
            return;
          }
        }
      }
    });
  }

  if (r.control) {
    const bool early = r.control->resume_early_;
    r.control->resume_ = [weak = weak_from_this(), id = t->id, executor = executor_] {
      net::post(executor, [weak, id] {
        if (auto self = weak.lock()) self->resume(id);
      });
    };
    if (early) r.control->resume_();
  }

  transfers_.emplace(e, std::move(t));
  if (CURLMcode mc = curl_multi_add_handle(multi_, e); mc != CURLM_OK) {
    auto node = transfers_.extract(e);
    t = std::move(node.mapped());
    if (t->slot.is_connected()) t->slot.clear();
    return fail_now(CURLE_FAILED_INIT,
                    std::string("curl_multi_add_handle: ") + curl_multi_strerror(mc));
  }
}

CURL* CurlMulti::take_easy() {
  if (idle_easy_.empty()) return curl_easy_init();
  CURL* e = idle_easy_.back();
  idle_easy_.pop_back();
  return e;
}

void CurlMulti::recycle_easy(CURL* easy) {
  if (idle_easy_.size() >= options_.max_idle_handles) {
    curl_easy_cleanup(easy);
    return;
  }
  curl_easy_reset(easy);  // every option back to its default; caches are kept
  idle_easy_.push_back(easy);
}

void CurlMulti::cancel(CURL* easy) {
  finish(easy, net::error::operation_aborted, CURLE_ABORTED_BY_CALLBACK);
}

void CurlMulti::resume(std::uint64_t id) {
  for (const auto& [easy, transfer] : transfers_) {
    if (transfer->id == id) {
      // May deliver held data through the callbacks at once; curl then asks
      // for a 0 ms timeout, and the posted kick drives the transfer on.
      curl_easy_pause(easy, CURLPAUSE_CONT);
      return;
    }
  }
}

void TransferControl::resume() {
  if (resume_) {
    resume_();
  } else {
    resume_early_ = true;
  }
}

void CurlMulti::finish(CURL* easy, boost::system::error_code ec, CURLcode code) {
  auto node = transfers_.extract(easy);
  if (node.empty()) return;
  std::unique_ptr<Transfer> t = std::move(node.mapped());
  curl_multi_remove_handle(multi_, easy);

  HttpResult result = std::move(t->result);
  result.code = code;
  if (code != CURLE_OK) {
    result.error = t->error_buffer[0] != '\0' ? t->error_buffer : curl_easy_strerror(code);
  }
  curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &result.status);
  if (t->slot.is_connected()) t->slot.clear();

  auto handler = std::move(t->handler);
  t->easy = nullptr;  // recycled below, not freed with the transfer
  t.reset();          // frees the transfer now, not when the caller resumes
  recycle_easy(easy);
  // Posted, never run inline: we may be inside curl_multi_socket_action or the
  // caller's cancellation, and the caller may destroy us when it resumes. Our
  // executor is the caller's (single-threaded design, see the header).
  net::post(executor_, [h = std::move(handler), ec, r = std::move(result)]() mutable {
    std::move(h)(ec, std::move(r));
  });
}

void CurlMulti::check_completed() {
  int left = 0;
  while (CURLMsg* msg = curl_multi_info_read(multi_, &left)) {
    if (msg->msg != CURLMSG_DONE) continue;
    // Copy out: msg dies with curl_multi_remove_handle.
    CURL* easy = msg->easy_handle;
    CURLcode code = msg->data.result;
    finish(easy, {}, code);
  }
}

void CurlMulti::on_socket_ready(curl_socket_t fd, int curl_event) {
  int running = 0;
  curl_multi_socket_action(multi_, fd, curl_event, &running);
  check_completed();
}

void CurlMulti::arm(curl_socket_t fd, const std::shared_ptr<Socket>& socket) {
  auto on_ready = [weak = weak_from_this(), socket, fd](int poll_bit, int select_bit) {
    return [weak, socket, fd, poll_bit, select_bit](boost::system::error_code ec) {
      (poll_bit == CURL_POLL_IN ? socket->reading : socket->writing) = false;
      if (ec == net::error::operation_aborted || socket->closed) return;
      auto self = weak.lock();
      if (!self) return;
      if (ec) {
        self->on_socket_ready(fd, CURL_CSELECT_ERR);
      } else if ((socket->wanted & poll_bit) != 0) {
        self->on_socket_ready(fd, select_bit);
      }
      if (!socket->closed) self->arm(fd, socket);
    };
  };
  if ((socket->wanted & CURL_POLL_IN) != 0 && !socket->reading) {
    socket->reading = true;
    socket->descriptor.async_wait(net::posix::descriptor_base::wait_read,
                                  on_ready(CURL_POLL_IN, CURL_CSELECT_IN));
  }
  if ((socket->wanted & CURL_POLL_OUT) != 0 && !socket->writing) {
    socket->writing = true;
    socket->descriptor.async_wait(net::posix::descriptor_base::wait_write,
                                  on_ready(CURL_POLL_OUT, CURL_CSELECT_OUT));
  }
}

int CurlMulti::socket_callback(CURL*, curl_socket_t fd, int what, void* userp, void*) {
  auto* self = static_cast<CurlMulti*>(userp);
  auto it = self->sockets_.find(fd);
  if (it == self->sockets_.end()) {
    log::warn("curl asked to watch a socket it did not open through us", {{"fd", fd}});
    return 0;
  }
  it->second->wanted = what == CURL_POLL_REMOVE ? 0 : what;
  self->arm(fd, it->second);
  return 0;
}

int CurlMulti::timer_callback(CURLM*, long timeout_ms, void* userp) {
  auto* self = static_cast<CurlMulti*>(userp);
  if (timeout_ms < 0) {
    self->timer_.cancel();
    return 0;
  }
  // curl forbids calling curl_multi_socket_action from inside its own
  // callback: a 0 ms timeout ("run now", asked for at every new transfer) is
  // posted, which costs no timerfd update and no extra epoll round.
  if (timeout_ms == 0) {
    self->timer_.cancel();
    if (!self->kick_posted_) {
      self->kick_posted_ = true;
      net::post(self->executor_, [weak = self->weak_from_this()] {
        if (auto me = weak.lock()) {
          me->kick_posted_ = false;
          me->on_socket_ready(CURL_SOCKET_TIMEOUT, 0);
        }
      });
    }
    return 0;
  }
  self->timer_.expires_after(std::chrono::milliseconds(timeout_ms));
  self->timer_.async_wait([weak = self->weak_from_this()](boost::system::error_code ec) {
    if (ec) return;
    if (auto me = weak.lock()) me->on_socket_ready(CURL_SOCKET_TIMEOUT, 0);
  });
  return 0;
}

curl_socket_t CurlMulti::open_socket(void* clientp, curlsocktype purpose, curl_sockaddr* address) {
  auto* self = static_cast<CurlMulti*>(clientp);
  if (purpose != CURLSOCKTYPE_IPCXN) return CURL_SOCKET_BAD;
  int fd = ::socket(address->family, address->socktype | SOCK_CLOEXEC, address->protocol);
  if (fd < 0) return CURL_SOCKET_BAD;
  auto socket = std::make_shared<Socket>(self->executor_);
  boost::system::error_code ec;
  socket->descriptor.assign(fd, ec);
  if (ec) {
    ::close(fd);
    return CURL_SOCKET_BAD;
  }
  self->sockets_[fd] = std::move(socket);
  ++self->connections_opened_;
  return fd;
}

int CurlMulti::close_socket(void* clientp, curl_socket_t fd) {
  auto* self = static_cast<CurlMulti*>(clientp);
  auto it = self->sockets_.find(fd);
  if (it == self->sockets_.end()) return ::close(fd);
  // Asio owns the fd: closing the descriptor cancels its queued waits, which
  // see `closed` and do nothing.
  it->second->closed = true;
  boost::system::error_code ec;
  it->second->descriptor.close(ec);
  self->sockets_.erase(it);
  return 0;
}

std::size_t CurlMulti::write_callback(char* data, std::size_t size, std::size_t n, void* userp) {
  auto* t = static_cast<Transfer*>(userp);
  std::size_t len = size * n;
  if (!t->body_route_decided) {
    long status = 0;
    curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
    // Only a successful body is the caller's stream; an error body is the
    // engine's JSON message, kept for the error.
    const bool streaming = t->request.on_body || t->request.on_body_flow;
    t->body_to_sink = streaming && status >= 200 && status < 300;
    t->body_route_decided = true;
  }
  if (t->body_to_sink && t->request.on_body_flow) {
    try {
      if (t->request.on_body_flow(std::string_view(data, len)) == Flow::pause) {
        return CURL_WRITEFUNC_PAUSE;
      }
    } catch (...) {
      t->result.sink_error = std::current_exception();
      return 0;
    }
    return len;
  }
  if (t->body_to_sink) {
    try {
      t->request.on_body(std::string_view(data, len));
    } catch (...) {
      t->result.sink_error = std::current_exception();
      return 0;  // != len: curl aborts with CURLE_WRITE_ERROR
    }
    return len;
  }
  if (t->request.on_body || t->request.on_body_flow) {
    std::size_t room = t->error_body_limit - std::min(t->error_body_limit, t->result.body.size());
    t->result.body.append(data, std::min(room, len));
    return len;
  }
  t->result.body.append(data, len);
  return len;
}

std::size_t CurlMulti::header_callback(char* data, std::size_t size, std::size_t n, void* userp) {
  auto* t = static_cast<Transfer*>(userp);
  std::string_view line(data, size * n);
  if (line.rfind("HTTP/", 0) == 0) {
    // A new status line (after "100 Continue"): forget the interim headers.
    t->result.headers.clear();
    t->body_route_decided = false;
    return line.size();
  }
  auto colon = line.find(':');
  if (colon == std::string_view::npos) return line.size();
  std::string name(trim(line.substr(0, colon)));
  std::transform(name.begin(), name.end(), name.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  t->result.headers[name] = std::string(trim(line.substr(colon + 1)));
  return line.size();
}

std::size_t CurlMulti::read_callback(char* buffer, std::size_t size, std::size_t n, void* userp) {
  auto* t = static_cast<Transfer*>(userp);
  if (t->request.body_source) {
    try {
      return t->request.body_source(buffer, size * n);
    } catch (...) {
      t->result.sink_error = std::current_exception();
      return CURL_READFUNC_ABORT;
    }
  }
  std::size_t got = std::fread(buffer, 1, size * n, t->upload);
  if (got == 0 && std::ferror(t->upload) != 0) return CURL_READFUNC_ABORT;
  return got;
}

}  // namespace warmstart::container
