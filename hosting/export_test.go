package hosting

// HoldStartSlot takes one of s's start slots (ServiceConfig.Starts) until
// the returned function is called: the tests queue starts behind it.
func HoldStartSlot(s *Service) func() {
	s.starts <- struct{}{}
	return func() { <-s.starts }
}
