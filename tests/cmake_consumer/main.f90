program consumer_f
  use piddm
  use, intrinsic :: iso_c_binding
  implicit none
  type(piddm_model) :: m
  character(len=512) :: path
  real(c_float), allocatable :: u(:, :, :)
  call get_command_argument(1, path)
  call m%load(trim(path))
  allocate (u(m%nx, m%ny, m%nc))
  call m%generate(1_c_int64_t, u)
  write (*, '("consumer_f: ",i0," x ",i0," x ",i0,", generate ok")') m%nc, m%ny, m%nx
end program
