// Load the plugin as the console does and render one of its extensions for the TrainingJob in the query
// string (?namespace=&name=): the "Training" tab (console.tab/horizontalNav), or with &list=1 the list page.
(async () => {
  const params = new URLSearchParams(location.search);
  const base = '/api/plugins/yolo-operator-console-plugin/';
  const manifest = await (await fetch(base + 'plugin-manifest.json')).json();
  const registered = new Promise((resolve) => {
    window.__load_plugin_entry__ = (name, container) => resolve({ name, container });
  });
  for (const script of manifest.loadScripts) {
    const el = document.createElement('script');
    el.src = manifest.baseURL + script;
    document.head.appendChild(el);
  }
  const { name, container } = await registered;
  const shared = (version, value) => ({ [version]: { get: () => Promise.resolve(() => value), loaded: 1, from: 'console' } });
  await container.init({
    react: shared(React.version, window.React),
    '@openshift-console/dynamic-plugin-sdk': shared('4.22.0', window.consoleSdkShim),
  });
  const type = params.get('list') ? 'console.page/resource/list' : 'console.tab/horizontalNav';
  const extension = manifest.extensions.find((e) => e.type === type);
  const [moduleName, exportName = 'default'] = extension.properties.component.$codeRef.split('.');
  const Component = (await container.get(moduleName))()[exportName];
  const namespace = params.get('namespace');
  const props = params.get('list')
    ? { namespace }
    : { obj: { metadata: { name: params.get('name'), namespace } } };
  document.getElementById('header').textContent =
    `${name} ${manifest.version} · ${extension.type} ${extension.properties.page ? `"${extension.properties.page.name}"` : ''}` +
    ` · TrainingJob ${namespace}/${params.get('name') || ''}`;
  ReactDOM.createRoot(document.getElementById('root')).render(React.createElement(Component, props));
  window.pluginLoaded = name;
})().catch((e) => {
  window.pluginError = String((e && e.stack) || e);
});
