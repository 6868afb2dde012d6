! The sizes and field offsets of the module's bind(c) types, to compare with piddm.h's.
program layout
  use piddm
  use, intrinsic :: iso_c_binding
  implicit none
  type(piddm_options), target :: o
  type(piddm_solve_params), target :: p
  type(piddm_solve_report), target :: r
  print '(a,1x,i0)', "piddm_options", c_sizeof(o)
  call off("piddm_options.size", c_loc(o), c_loc(o%size))
  call off("piddm_options.device", c_loc(o), c_loc(o%device))
  call off("piddm_options.device_id", c_loc(o), c_loc(o%device_id))
  call off("piddm_options.cuda_fallback_to_cpu", c_loc(o), c_loc(o%cuda_fallback_to_cpu))
  call off("piddm_options.intra_op_threads", c_loc(o), c_loc(o%intra_op_threads))
  call off("piddm_options.ort_library", c_loc(o), c_loc(o%ort_library))
  call off("piddm_options.verify_weights", c_loc(o), c_loc(o%verify_weights))
  call off("piddm_options.precision", c_loc(o), c_loc(o%precision))
  call off("piddm_options.reserved", c_loc(o), c_loc(o%reserved))
  print '(a,1x,i0)', "piddm_solve_params", c_sizeof(p)
  call off("piddm_solve_params.size", c_loc(p), c_loc(p%size))
  call off("piddm_solve_params.steps", c_loc(p), c_loc(p%steps))
  call off("piddm_solve_params.learning_rate", c_loc(p), c_loc(p%learning_rate))
  call off("piddm_solve_params.lambda_infer", c_loc(p), c_loc(p%lambda_infer))
  call off("piddm_solve_params.seed", c_loc(p), c_loc(p%seed))
  call off("piddm_solve_params.start", c_loc(p), c_loc(p%start))
  call off("piddm_solve_params.optimizer", c_loc(p), c_loc(p%optimizer))
  call off("piddm_solve_params.noise_scale", c_loc(p), c_loc(p%noise_scale))
  print '(a,1x,i0)', "piddm_solve_report", c_sizeof(r)
  call off("piddm_solve_report.size", c_loc(r), c_loc(r%size))
  call off("piddm_solve_report.steps", c_loc(r), c_loc(r%steps))
  call off("piddm_solve_report.initial_loss", c_loc(r), c_loc(r%initial_loss))
  call off("piddm_solve_report.final_loss", c_loc(r), c_loc(r%final_loss))
  call off("piddm_solve_report.misfit", c_loc(r), c_loc(r%misfit))
  call off("piddm_solve_report.residual", c_loc(r), c_loc(r%residual))
  call off("piddm_solve_report.loss_history", c_loc(r), c_loc(r%loss_history))
  call off("piddm_solve_report.loss_history_len", c_loc(r), c_loc(r%loss_history_len))
contains
  subroutine off(name, base, field)
    character(*), intent(in) :: name
    type(c_ptr), intent(in) :: base, field
    print '(a,1x,i0)', name, transfer(field, 0_c_intptr_t) - transfer(base, 0_c_intptr_t)
  end subroutine
end program
