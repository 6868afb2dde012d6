/* The sizes and field offsets of the header's structs, to compare with the Fortran module's. */
#include "piddm.h"
#include <stddef.h>
#include <stdio.h>
#define S(T) printf(#T " %zu\n", sizeof(T))
#define F(T, f) printf(#T "." #f " %zu\n", offsetof(T, f))
int main(void) {
    S(piddm_options);
    F(piddm_options, size); F(piddm_options, device); F(piddm_options, device_id);
    F(piddm_options, cuda_fallback_to_cpu); F(piddm_options, intra_op_threads);
    F(piddm_options, ort_library); F(piddm_options, verify_weights);
    F(piddm_options, precision); F(piddm_options, reserved);
    S(piddm_solve_params);
    F(piddm_solve_params, size); F(piddm_solve_params, steps); F(piddm_solve_params, learning_rate);
    F(piddm_solve_params, lambda_infer); F(piddm_solve_params, seed);
    F(piddm_solve_params, start); F(piddm_solve_params, optimizer);
    F(piddm_solve_params, noise_scale);
    S(piddm_solve_report);
    F(piddm_solve_report, size); F(piddm_solve_report, steps); F(piddm_solve_report, initial_loss);
    F(piddm_solve_report, final_loss); F(piddm_solve_report, misfit); F(piddm_solve_report, residual);
    F(piddm_solve_report, loss_history); F(piddm_solve_report, loss_history_len);
    return 0;
}
