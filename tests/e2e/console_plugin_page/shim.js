// The part of @openshift-console/dynamic-plugin-sdk the plugin imports, as the console would share it: a
// useK8sWatchResource that reads the bed's REAL API server (through the test server's /k8s/ proxy). The
// console's hook holds a websocket watch; this one polls every second, enough to see each epoch arrive.
(function () {
  const pathOf = (resource) => {
    const { group, version, kind } = resource.groupVersionKind;
    const plural = kind.toLowerCase() + 's';
    const base = group ? `/k8s/apis/${group}/${version}` : `/k8s/api/${version}`;
    const ns = resource.namespace ? `/namespaces/${resource.namespace}` : '';
    return `${base}${ns}/${plural}${resource.isList ? '' : `/${resource.name}`}`;
  };

  function useK8sWatchResource(resource) {
    const empty = resource && resource.isList ? [] : undefined;
    const [state, setState] = React.useState([empty, false, undefined]);
    const key = JSON.stringify(resource || null);
    React.useEffect(() => {
      if (!resource) return undefined;
      let stopped = false;
      let timer;
      const poll = async () => {
        try {
          const response = await fetch(pathOf(resource), { cache: 'no-store' });
          if (!response.ok) throw new Error(`${response.status} ${await response.text()}`);
          const body = await response.json();
          window.shimPolls = (window.shimPolls || 0) + 1;
          if (!stopped) setState([resource.isList ? body.items : body, true, undefined]);
        } catch (e) {
          if (!stopped) setState((s) => [s[0], s[1], e]);
        }
        if (!stopped) timer = setTimeout(poll, 1000);
      };
      poll();
      return () => {
        stopped = true;
        clearTimeout(timer);
      };
    }, [key]);
    return state;
  }

  window.consoleSdkShim = { useK8sWatchResource };
})();
