// piddm C++ wrapper: header-only RAII over the C API (include/piddm.h). Errors become
// piddm::error exceptions carrying the status and the library's message.
#ifndef PIDDM_HPP
#define PIDDM_HPP

#include "piddm.h"

#include <cmath>
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
    options() { check(piddm_options_init(&raw, sizeof raw), "piddm_options_init"); }
    options &cpu() { raw.device = PIDDM_DEVICE_CPU; return *this; }
    options &cuda(int device_id, bool fallback_to_cpu = false) {
        raw.device = PIDDM_DEVICE_CUDA;
        raw.device_id = device_id;
        raw.cuda_fallback_to_cpu = fallback_to_cpu ? 1 : 0;
        return *this;
    }
    options &threads(int n) { raw.intra_op_threads = n; return *this; }
    options &ort_library(const char *path) { raw.ort_library = path; return *this; }
    options &verify_weights(bool on) { raw.verify_weights = on ? 1 : 0; return *this; }
    options &precision(piddm_precision p) { raw.precision = p; return *this; }
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

// What solve_spread returns: [batch][channels][ny][nx] mean and calibrated std, [batch] scales.
struct spread_result {
    std::vector<float> mean, std;
    std::vector<double> std_scale;
};

// A loaded model; thread-safe for concurrent calls (see piddm.h). Copies share the loaded model
// (piddm_model_clone): nothing is reloaded, and each copy releases its own handle.
class model {
  public:
    explicit model(const std::string &path, const options &o = options()) {
        check(piddm_model_load(path.c_str(), &o.raw, &m_), "piddm_model_load");
    }
    ~model() { piddm_model_free(&m_); }
    model(const model &other) { check(piddm_model_clone(other.m_, &m_), "piddm_model_clone"); }
    model &operator=(const model &other) {
        if (this != &other) {
            piddm_model *c = nullptr;
            check(piddm_model_clone(other.m_, &c), "piddm_model_clone");
            piddm_model_free(&m_);
            m_ = c;
        }
        return *this;
    }
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
    void generate(std::uint64_t seed, std::size_t batch, float *out, std::size_t out_len) const {
        check(piddm_generate(m_, seed, batch, out, out_len), "piddm_generate");
    }
    std::vector<float> generate(std::uint64_t seed, std::size_t batch) const {
        std::vector<float> v(values(batch, "piddm::model::generate"));
        generate(seed, batch, v.data(), v.size());
        return v;
    }
    // Channels of the residual map: 1, or one per time level for a family whose channels are levels.
    std::size_t residual_channels() const {
        std::size_t rc = 0;
        check(piddm_model_residual_channels(m_, &rc), "piddm_model_residual_channels");
        return rc;
    }
    // Residual map of `fields` (batch samples, [batch][residual_channels][ny][nx]); returns the
    // mean squared residual over the points where an equation holds.
    double residual(const std::vector<float> &fields, std::size_t batch, std::vector<float> &map) const {
        shape_t s = shape();
        values(batch, "piddm::model::residual");
        map.resize(batch * residual_channels() * s.ny * s.nx);
        double ms = 0;
        check(piddm_residual(m_, fields.data(), batch, map.data(), map.size(), &ms), "piddm_residual");
        return ms;
    }
    // Whether solve() can answer in one call (steps = 0) with the model's amortised encoder.
    bool has_amortised() const {
        std::int32_t h = 0;
        check(piddm_model_has_amortised(m_, &h), "piddm_model_has_amortised");
        return h != 0;
    }
    piddm_solve_params default_solve_params() const {
        piddm_solve_params p;
        check(piddm_solve_params_init(m_, &p, sizeof p), "piddm_solve_params_init");
        return p;
    }
    // Masked solve: observed values where mask != 0 (physical units); returns the answer and report.
    solve_result solve(const std::vector<float> &observed, const std::vector<std::uint8_t> &mask, std::size_t batch,
                       const piddm_solve_params &p) const {
        solve_result r;
        r.fields.resize(values(batch, "piddm::model::solve"));
        if (p.steps < 0 || p.steps > PIDDM_MAX_STEPS)
            throw error(PIDDM_ERR_INVALID_ARGUMENT, "piddm::model::solve: steps must be 0 to PIDDM_MAX_STEPS");
        r.loss_history.resize(std::size_t(p.steps) + 1);
        check(piddm_solve_report_init(&r.report, sizeof r.report), "piddm_solve_report_init");
        r.report.loss_history = r.loss_history.data();
        r.report.loss_history_len = r.loss_history.size();
        if (observed.size() != r.fields.size() || mask.size() != r.fields.size())
            throw error(PIDDM_ERR_SIZE, "piddm::model::solve: observed and mask must hold batch * channels * ny * nx values");
        check(piddm_solve(m_, observed.data(), mask.data(), batch, &p, r.fields.data(), r.fields.size(), &r.report),
              "piddm_solve");
        r.report.loss_history = nullptr;
        if (std::isnan(r.report.initial_loss)) r.loss_history.clear(); // the one-call answer: no loss
        return r;
    }
    // K = answers one-call answers per observation: their mean and their std with the model's
    // spread calibration applied (mean +- 2 std the calibrated band), and the std scale each
    // sample took (1 where the model has no calibration).
    spread_result solve_spread(const std::vector<float> &observed, const std::vector<std::uint8_t> &mask,
                               std::size_t batch, std::size_t answers, const piddm_solve_params &p) const {
        spread_result r;
        r.mean.resize(values(batch, "piddm::model::solve_spread"));
        r.std.resize(r.mean.size());
        r.std_scale.resize(batch);
        if (observed.size() != r.mean.size() || mask.size() != r.mean.size())
            throw error(PIDDM_ERR_SIZE, "piddm::model::solve_spread: observed and mask must hold batch * channels * ny * nx values");
        check(piddm_solve_spread(m_, observed.data(), mask.data(), batch, answers, &p, r.mean.data(), r.std.data(),
                                 r.mean.size(), r.std_scale.data()),
              "piddm_solve_spread");
        return r;
    }
    const piddm_model *get() const noexcept { return m_; }

  private:
    // batch * channels * ny * nx, refused past the library's limits before anything is allocated.
    std::size_t values(std::size_t batch, const char *where) const {
        const std::size_t f = shape().field();
        if (batch == 0 || batch > PIDDM_MAX_BATCH || f == 0 || batch > std::size_t(PIDDM_MAX_VALUES) / f)
            throw error(PIDDM_ERR_SIZE, std::string(where) + ": batch must be 1 to PIDDM_MAX_BATCH, and at most PIDDM_MAX_VALUES values");
        return batch * f;
    }
    piddm_model *m_ = nullptr;
};

} // namespace piddm

#endif
