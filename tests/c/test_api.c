/* The C API end to end, and every entry point's answer to bad input.
 * usage: test_api MODEL.onnx TRUNCATED.onnx FOREIGN.onnx  */
#include "piddm.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int passed = 0, failed = 0;
#define CHECK(cond, ...)                                                      \
    do {                                                                      \
        if (cond) {                                                           \
            passed++;                                                         \
        } else {                                                              \
            failed++;                                                         \
            fprintf(stderr, "FAIL line %d: %s: ", __LINE__, #cond);           \
            fprintf(stderr, __VA_ARGS__);                                     \
            fprintf(stderr, " (last error: %s)\n", piddm_last_error());       \
        }                                                                     \
    } while (0)

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s MODEL TRUNCATED FOREIGN\n", argv[0]);
        return 2;
    }
    CHECK(piddm_abi_version() == PIDDM_ABI_VERSION, "abi %u", piddm_abi_version());
    CHECK(strcmp(piddm_version(), PIDDM_VERSION) == 0, "version %s", piddm_version());

    piddm_options opts;
    CHECK(piddm_options_init(&opts, sizeof opts) == PIDDM_OK && opts.size == sizeof opts && opts.verify_weights == 1 && opts.precision == PIDDM_PRECISION_FP32, "defaults");
    opts.intra_op_threads = 1;
    piddm_model *m = NULL;
    piddm_status s = piddm_model_load(argv[1], &opts, &m);
    CHECK(s == PIDDM_OK && m != NULL, "load %s", piddm_status_name(s));
    if (!m) {
        printf("%d passed, %d failed\n", passed, failed + 1);
        return 1;
    }
    size_t c = 0, ny = 0, nx = 0;
    CHECK(piddm_model_shape(m, &c, &ny, &nx) == PIDDM_OK && c == 2 && ny > 2 && nx == ny, "shape %zu %zu %zu", c, ny, nx);
    const char *card = NULL;
    CHECK(piddm_model_card(m, &card) == PIDDM_OK && strstr(card, "\"darcy\"") != NULL, "card");

    const size_t batch = 3, n = c * ny * nx, plane = ny * nx;
    float *x = malloc(batch * n * sizeof(float)), *x2 = malloc(batch * n * sizeof(float));
    float *r = malloc(batch * plane * sizeof(float));
    CHECK(piddm_generate(m, 42, batch, x, batch * n) == PIDDM_OK, "generate");
    CHECK(piddm_generate(m, 42, batch, x2, batch * n) == PIDDM_OK && memcmp(x, x2, batch * n * sizeof(float)) == 0, "same seed, same bits");
    int finite = 1;
    for (size_t i = 0; i < batch * n; i++) finite &= isfinite(x[i]) != 0;
    CHECK(finite, "generated fields are finite");
    double ms = -1;
    CHECK(piddm_residual(m, x, batch, r, batch * plane, &ms) == PIDDM_OK && ms > 0 && isfinite(ms), "residual %g", ms);
    CHECK(r[0] == 0.0f && r[plane - 1] == 0.0f, "residual is zero on the boundary");

    /* forward problem: a observed everywhere, u free */
    unsigned char *mask = calloc(batch * n, 1);
    for (size_t b = 0; b < batch; b++)
        for (size_t i = 0; i < plane; i++) mask[b * n + i] = 1;
    piddm_solve_params p;
    CHECK(piddm_solve_params_init(m, &p, sizeof p) == PIDDM_OK && p.steps > 0, "solve defaults");
    p.steps = 5;
    double hist[6] = {0};
    piddm_solve_report rep;
    CHECK(piddm_solve_report_init(&rep, sizeof rep) == PIDDM_OK && rep.size == sizeof rep, "report init");
    rep.loss_history = hist;
    rep.loss_history_len = 6;
    float *out = malloc(batch * n * sizeof(float));
    CHECK(piddm_solve(m, x, mask, batch, &p, out, batch * n, &rep) == PIDDM_OK, "solve");
    CHECK(rep.steps == 5 && hist[5] == rep.final_loss && rep.final_loss <= rep.initial_loss, "report %g -> %g", rep.initial_loss, rep.final_loss);
    CHECK(rep.misfit == 0.0 && out[0] == x[0], "observed entries kept (misfit %g)", rep.misfit);
    CHECK(piddm_solve(m, x, mask, batch, NULL, out, batch * n, NULL) == PIDDM_OK, "solve with the card's defaults");

    /* the one-call answer: steps = 0 from the amortised encoder, no loss evaluated */
    int32_t has = -1;
    CHECK(piddm_model_has_amortised(m, &has) == PIDDM_OK && has == 1, "the test model has the amortised part (%d)", has);
    CHECK(piddm_model_has_amortised(m, NULL) == PIDDM_ERR_NULL, "NULL has");
    piddm_solve_params one;
    piddm_solve_params_init(m, &one, sizeof one);
    CHECK(one.start == PIDDM_START_AUTO, "the card's start is auto (%d)", one.start);
    one.steps = 0;
    one.start = PIDDM_START_AMORTISED;
    CHECK(piddm_solve(m, x, mask, batch, &one, out, batch * n, &rep) == PIDDM_OK, "one call");
    CHECK(rep.steps == 0 && isnan(rep.initial_loss) && isnan(rep.final_loss) && rep.misfit == 0.0, "one-call report: no loss (%g), observations kept (%g)", rep.initial_loss, rep.misfit);
    float *out2 = malloc(batch * n * sizeof(float));
    one.start = PIDDM_START_AUTO;
    CHECK(piddm_solve(m, x, mask, batch, &one, out2, batch * n, NULL) == PIDDM_OK && memcmp(out, out2, batch * n * sizeof(float)) == 0, "auto starts from the encoder on this model");
    one.start = PIDDM_START_RANDOM;
    CHECK(piddm_solve(m, x, mask, batch, &one, out2, batch * n, NULL) == PIDDM_OK && memcmp(out, out2, batch * n * sizeof(float)) != 0, "the random start is another answer");
    one.start = 7;
    CHECK(piddm_solve(m, x, mask, batch, &one, out2, batch * n, NULL) == PIDDM_ERR_INVALID_ARGUMENT && strstr(piddm_last_error(), "piddm_start") != NULL, "bad start: %s", piddm_last_error());
    one.start = PIDDM_START_AUTO;
    one.optimizer = -1;
    CHECK(piddm_solve(m, x, mask, batch, &one, out2, batch * n, NULL) == PIDDM_ERR_INVALID_ARGUMENT && strstr(piddm_last_error(), "piddm_optimizer") != NULL, "bad optimizer: %s", piddm_last_error());
    one.optimizer = PIDDM_OPTIMIZER_LBFGS;
    one.steps = 3;
    CHECK(piddm_solve_report_init(&rep, sizeof rep) == PIDDM_OK, "report init");
    rep.loss_history = hist;
    rep.loss_history_len = 6;
    CHECK(piddm_solve(m, x, mask, batch, &one, out2, batch * n, &rep) == PIDDM_OK && rep.final_loss <= rep.initial_loss && hist[1] <= hist[0] && hist[2] <= hist[1] && hist[3] == rep.final_loss, "L-BFGS never raises the kept loss: %g %g %g %g", hist[0], hist[1], hist[2], hist[3]);

    /* a program built against the piddm.h before `start` and `optimizer` were appended passes the
       shorter size: accepted, and it gets the card's defaults for the fields it does not know */
    struct {
        size_t size;
        int64_t steps;
        double learning_rate, lambda_infer;
        uint64_t seed;
    } old;
    CHECK(piddm_solve_params_init(m, (piddm_solve_params *)(void *)&old, sizeof old) == PIDDM_OK && old.size == sizeof old, "init of the shorter struct");
    CHECK(piddm_solve(m, x, mask, batch, (const piddm_solve_params *)(const void *)&old, out, batch * n, NULL) == PIDDM_OK, "solve with the shorter struct");
    CHECK(piddm_solve(m, x, mask, batch, NULL, out2, batch * n, NULL) == PIDDM_OK && memcmp(out, out2, batch * n * sizeof(float)) == 0, "the shorter struct gives the card's default answer");
    old.size = sizeof old + 4;
    CHECK(piddm_solve(m, x, mask, batch, (const piddm_solve_params *)(const void *)&old, out, batch * n, NULL) == PIDDM_ERR_ABI, "a size between the two is refused");
    /* and one built before `noise_scale`: its answers are the card's default scale's */
    struct {
        size_t size;
        int64_t steps;
        double learning_rate, lambda_infer;
        uint64_t seed;
        int32_t start, optimizer;
    } before_scale;
    CHECK(sizeof before_scale == offsetof(piddm_solve_params, noise_scale), "the layout before noise_scale is its prefix");
    CHECK(piddm_solve_params_init(m, (piddm_solve_params *)(void *)&before_scale, sizeof before_scale) == PIDDM_OK && before_scale.size == sizeof before_scale, "init of the struct before noise_scale");
    before_scale.steps = 0;
    CHECK(piddm_solve(m, x, mask, batch, (const piddm_solve_params *)(const void *)&before_scale, out, batch * n, NULL) == PIDDM_OK, "solve with the struct before noise_scale");
    {
        piddm_solve_params full;
        piddm_solve_params_init(m, &full, sizeof full);
        full.steps = 0;
        CHECK(piddm_solve(m, x, mask, batch, &full, out2, batch * n, NULL) == PIDDM_OK && memcmp(out, out2, batch * n * sizeof(float)) == 0, "the struct before noise_scale gets the card's scale");
        full.noise_scale = -1.0;
        CHECK(piddm_solve(m, x, mask, batch, &full, out2, batch * n, NULL) == PIDDM_ERR_INVALID_ARGUMENT && strstr(piddm_last_error(), "noise_scale") != NULL, "a negative noise_scale is refused: %s", piddm_last_error());
        full.noise_scale = 0.0;
        piddm_solve(m, x, mask, batch, &full, out, batch * n, NULL);
        full.seed = 77;
        CHECK(piddm_solve(m, x, mask, batch, &full, out2, batch * n, NULL) == PIDDM_OK && memcmp(out, out2, batch * n * sizeof(float)) == 0, "noise_scale 0: every seed the same answer");
    }
    /* the spread: K answers' mean and std against K piddm_solve calls (seed + k, noise scale 1 on
       a model without calibration, whatever params says), averaged here in double */
    {
        enum { K = 3 };
        const size_t len = batch * n;
        piddm_solve_params sp;
        piddm_solve_params_init(m, &sp, sizeof sp);
        sp.steps = 0;
        sp.seed = 40;
        sp.noise_scale = 0.0; /* ignored by the spread */
        float *mean = malloc(len * sizeof(float)), *sd = malloc(len * sizeof(float));
        float *draw = malloc(len * sizeof(float));
        double *acc = calloc(len, sizeof(double)), *acc2 = calloc(len, sizeof(double));
        double scale[4] = {0};
        CHECK(piddm_solve_spread(m, x, mask, batch, K, &sp, mean, sd, len, scale) == PIDDM_OK, "solve_spread: %s", piddm_last_error());
        for (int k = 0; k < K; k++) {
            piddm_solve_params q = sp;
            q.seed = 40 + (uint64_t)k;
            q.noise_scale = 1.0;
            CHECK(piddm_solve(m, x, mask, batch, &q, draw, len, NULL) == PIDDM_OK, "answer %d", k);
            for (size_t i = 0; i < len; i++) { acc[i] += draw[i]; acc2[i] += (double)draw[i] * draw[i]; }
        }
        double worst_mean = 0, worst_std = 0, spread_total = 0;
        for (size_t i = 0; i < len; i++) {
            double mu = acc[i] / K, var = (acc2[i] - K * mu * mu) / (K - 1);
            double sdv = var > 0 ? sqrt(var) : 0;
            double scl = 1e-6 * (1 + fabs(mu));
            if (fabs(mean[i] - mu) / scl > worst_mean) worst_mean = fabs(mean[i] - mu) / scl;
            if (fabs(sd[i] - sdv) / (scl + 1e-3 * sdv) > worst_std) worst_std = fabs(sd[i] - sdv) / (scl + 1e-3 * sdv);
            spread_total += sd[i];
        }
        CHECK(worst_mean <= 10 && worst_std <= 10, "spread against K solves: mean %g, std %g (units of tolerance)", worst_mean, worst_std);
        CHECK(spread_total > 0 && scale[0] == 1.0 && scale[batch - 1] == 1.0, "an uncalibrated model: the raw std (scale %g), and some spread (%g)", scale[0], spread_total);
        CHECK(piddm_solve_spread(m, x, mask, batch, K, NULL, mean, sd, len, NULL) == PIDDM_OK, "NULL params and NULL std_scale");
        CHECK(piddm_solve_spread(m, x, mask, batch, 1, &sp, mean, sd, len, NULL) == PIDDM_ERR_INVALID_ARGUMENT && strstr(piddm_last_error(), "answers") != NULL, "one answer is refused: %s", piddm_last_error());
        CHECK(piddm_solve_spread(m, x, mask, batch, PIDDM_MAX_SPREAD_ANSWERS + 1, &sp, mean, sd, len, NULL) == PIDDM_ERR_INVALID_ARGUMENT, "too many answers are refused");
        CHECK(piddm_solve_spread(m, x, mask, batch, K, &sp, mean, mean, len, NULL) == PIDDM_ERR_INVALID_ARGUMENT && strstr(piddm_last_error(), "distinct") != NULL, "mean and std in one buffer: %s", piddm_last_error());
        CHECK(piddm_solve_spread(m, x, mask, batch, K, &sp, mean, mean + 1, len, NULL) == PIDDM_ERR_INVALID_ARGUMENT, "overlapping mean and std");
        CHECK(piddm_solve_spread(m, x, mask, batch, K, &sp, NULL, sd, len, NULL) == PIDDM_ERR_NULL, "NULL mean");
        CHECK(piddm_solve_spread(m, x, mask, batch, K, &sp, mean, NULL, len, NULL) == PIDDM_ERR_NULL, "NULL std");
        CHECK(piddm_solve_spread(m, x, NULL, batch, K, &sp, mean, sd, len, NULL) == PIDDM_ERR_NULL, "NULL mask");
        CHECK(piddm_solve_spread(m, x, mask, batch, K, &sp, mean, sd, len - 1, NULL) == PIDDM_ERR_SIZE, "short outputs");
        CHECK(piddm_solve_spread(NULL, x, mask, batch, K, &sp, mean, sd, len, NULL) == PIDDM_ERR_NULL, "NULL model");
        free(mean); free(sd); free(draw); free(acc); free(acc2);
    }
    free(out2);

    /* bad input: each gets its documented status, and a message */
    CHECK(piddm_generate(NULL, 1, 1, x, n) == PIDDM_ERR_NULL, "NULL model");
    CHECK(strlen(piddm_last_error()) > 0, "message after failure");
    CHECK(piddm_generate(m, 1, 1, NULL, n) == PIDDM_ERR_NULL, "NULL out");
    CHECK(piddm_generate(m, 1, 1, x, n - 1) == PIDDM_ERR_SIZE, "short out");
    CHECK(strstr(piddm_last_error(), "needs") != NULL, "size message: %s", piddm_last_error());
    CHECK(piddm_generate(m, 1, 0, x, n) == PIDDM_ERR_INVALID_ARGUMENT, "batch 0");
    CHECK(piddm_model_shape(m, NULL, &ny, &nx) == PIDDM_ERR_NULL, "NULL shape out");
    CHECK(piddm_residual(m, x, 1, r, plane - 1, NULL) == PIDDM_ERR_SIZE, "short residual");
    x2[5] = NAN;
    CHECK(piddm_residual(m, x2, 1, r, plane, NULL) == PIDDM_ERR_NONFINITE, "NaN fields");
    x2[5] = INFINITY;
    CHECK(piddm_solve(m, x2, mask, 1, &p, out, n, NULL) == PIDDM_ERR_NONFINITE, "Inf observation");
    mask[5] = 0; /* unobserved: its Inf is ignored */
    CHECK(piddm_solve(m, x2, mask, 1, &p, out, n, NULL) == PIDDM_OK, "Inf where unobserved is ignored");
    CHECK(piddm_solve(m, x, NULL, 1, &p, out, n, NULL) == PIDDM_ERR_NULL, "NULL mask");
    CHECK(piddm_solve(m, x, mask, 1, &p, out, n + 1, NULL) == PIDDM_ERR_SIZE, "wrong out size");
    p.learning_rate = NAN;
    CHECK(piddm_solve(m, x, mask, 1, &p, out, n, NULL) == PIDDM_ERR_INVALID_ARGUMENT, "NaN learning rate");
    CHECK(piddm_options_init(NULL, sizeof opts) == PIDDM_ERR_NULL, "NULL options");

    piddm_model *bad = (piddm_model *)0x1;
    CHECK(piddm_model_load("/nonexistent/model.onnx", NULL, &bad) == PIDDM_ERR_IO && bad == NULL, "missing file");
    CHECK(piddm_model_load(argv[2], NULL, &bad) == PIDDM_ERR_FORMAT && bad == NULL, "truncated file");
    CHECK(piddm_model_load(argv[3], NULL, &bad) == PIDDM_ERR_FORMAT && bad == NULL, "foreign ONNX file");
    CHECK(strstr(piddm_last_error(), "not a PIDDM model") != NULL, "foreign message: %s", piddm_last_error());
    CHECK(piddm_model_load(NULL, NULL, &bad) == PIDDM_ERR_NULL, "NULL path");
    CHECK(piddm_model_load(argv[1], NULL, NULL) == PIDDM_ERR_NULL, "NULL out handle");
    opts.device = 7;
    CHECK(piddm_model_load(argv[1], &opts, &bad) == PIDDM_ERR_INVALID_ARGUMENT, "unknown device");
    opts.device = PIDDM_DEVICE_CUDA;
    s = piddm_model_load(argv[1], &opts, &bad);
    CHECK(s == PIDDM_OK || s == PIDDM_ERR_DEVICE, "CUDA: ok or a clear device error, got %s", piddm_status_name(s));
    piddm_model_free(&bad);
    opts.cuda_fallback_to_cpu = 1;
    CHECK(piddm_model_load(argv[1], &opts, &bad) == PIDDM_OK, "CUDA with CPU fallback");
    piddm_model_free(&bad);

    piddm_model_free(&m);
    CHECK(m == NULL, "free NULLs the handle");
    piddm_model_free(&m);   /* *model == NULL: no-op */
    piddm_model_free(NULL); /* NULL: no-op */
    free(x); free(x2); free(r); free(mask); free(out);
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
