// piddm C++ wrapper: header-only RAII over the C API (include/piddm.h). Errors become
// piddm::error exceptions carrying the status and the library's message.
#ifndef PIDDM_HPP
#define PIDDM_HPP

#include "piddm.h"

#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace piddm {

class error : public std::runtime_error {
  public:
    error(piddm_status status, const std::string &what) : std::runtime_error(what), status_(status) {}
    piddm_status status() const noexcept { return status_; }

  private:
    piddm_status status_;
};

inline void check(piddm_status s, const char *where) {
    if (s != PIDDM_OK)
        throw error(s, std::string(where) + ": " + piddm_status_name(s) + ": " + piddm_last_error());
}

struct options {
    piddm_options raw;
    options() { check(piddm_options_default(&raw), "piddm_options_default"); }
    options &cpu() { raw.device = PIDDM_DEVICE_CPU; return *this; }
    options &cuda(int device_id, bool fallback_to_cpu = false) {
        raw.device = PIDDM_DEVICE_CUDA;
        raw.device_id = device_id;
        raw.cuda_fallback_to_cpu = fallback_to_cpu ? 1 : 0;
        return *this;
    }
    options &threads(int n) { raw.intra_op_threads = n; return *this; }
    options &ort_library(const char *path) { raw.ort_library = path; return *this; }
};

struct shape_t {
    std::size_t channels, ny, nx;
    std::size_t field() const { return channels * ny * nx; }
};

struct solve_result {
    std::vector<float> fields;
    piddm_solve_report report;
    std::vector<double> loss_history;
};

// A loaded model. Movable, not copyable; thread-safe for concurrent calls (see piddm.h).
class model {
  public:
    explicit model(const std::string &path, const options &o = options()) {
        check(piddm_model_load(path.c_str(), &o.raw, &m_), "piddm_model_load");
    }
    ~model() { piddm_model_free(&m_); }
    model(const model &) = delete;
    model &operator=(const model &) = delete;
    model(model &&other) noexcept : m_(other.m_) { other.m_ = nullptr; }
    model &operator=(model &&other) noexcept {
        if (this != &other) {
            piddm_model_free(&m_);
            m_ = other.m_;
            other.m_ = nullptr;
        }
        return *this;
    }

    shape_t shape() const {
        shape_t s{};
        check(piddm_model_shape(m_, &s.channels, &s.ny, &s.nx), "piddm_model_shape");
        return s;
    }
    std::string card() const {
        const char *j = nullptr;
        check(piddm_model_card(m_, &j), "piddm_model_card");
        return j;
    }
    // Fills `out` (batch * channels * ny * nx floats) in place.
    void generate(std::uint64_t seed, std::size_t batch, float *out, std::size_t out_len) {
        check(piddm_generate(m_, seed, batch, out, out_len), "piddm_generate");
    }
    std::vector<float> generate(std::uint64_t seed, std::size_t batch) {
        std::vector<float> v(batch * shape().field());
        generate(seed, batch, v.data(), v.size());
        return v;
    }
    // Residual map of `fields` (batch samples); returns the mean squared residual over the interior.
    double residual(const std::vector<float> &fields, std::size_t batch, std::vector<float> &map) {
        shape_t s = shape();
        map.resize(batch * s.ny * s.nx);
        double ms = 0;
        check(piddm_residual(m_, fields.data(), batch, map.data(), map.size(), &ms), "piddm_residual");
        return ms;
    }
    piddm_solve_params default_solve_params() const {
        piddm_solve_params p;
        check(piddm_solve_params_default(m_, &p), "piddm_solve_params_default");
        return p;
    }
    // Masked solve: observed values where mask != 0 (physical units); returns the answer and report.
    solve_result solve(const std::vector<float> &observed, const std::vector<std::uint8_t> &mask, std::size_t batch,
                       const piddm_solve_params &p) {
        solve_result r;
        r.fields.resize(batch * shape().field());
        r.loss_history.resize(p.steps + 1);
        r.report = piddm_solve_report{};
        r.report.loss_history = r.loss_history.data();
        r.report.loss_history_len = r.loss_history.size();
        if (observed.size() != r.fields.size() || mask.size() != r.fields.size())
            throw error(PIDDM_ERR_SIZE, "piddm::model::solve: observed and mask must hold batch * channels * ny * nx values");
        check(piddm_solve(m_, observed.data(), mask.data(), batch, &p, r.fields.data(), r.fields.size(), &r.report),
              "piddm_solve");
        r.report.loss_history = nullptr;
        return r;
    }
    piddm_model *get() noexcept { return m_; }

  private:
    piddm_model *m_ = nullptr;
};

} // namespace piddm

#endif
